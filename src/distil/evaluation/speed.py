"""Inference speed of a model on one device: median latency of one forward pass and the throughput it implies.

Inputs are random token ids of a fixed length with a full attention mask (the token values do not change the
cost). On CUDA every timed forward is bracketed by `torch.cuda.synchronize()` so the clock sees the finished kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def median_forward_seconds(
    forward: Forward,
    device: torch.device,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    warmup: int,
    repeats: int,
    seed: int = 0,
) -> float:
    """Median wall-clock seconds of `forward(input_ids, attention_mask)` on a (batch_size, seq_len) batch.

    Args:
        forward: the computation to time; its parameters must already live on `device`.
        warmup: untimed calls first (allocator, kernel selection, caches).
        repeats: timed calls; the median is robust to the odd slow one.
    """
    if batch_size < 1 or seq_len < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"batch_size={batch_size}, seq_len={seq_len}, repeats={repeats} must be >= 1 and warmup={warmup} >= 0"
        )
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    for _ in range(warmup):
        forward(input_ids, attention_mask)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(input_ids, attention_mask)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(
    forward: Forward,
    device: torch.device,
    vocab_size: int,
    seq_len: int,
    latency_batch: int,
    throughput_batch: int,
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """{"latency_ms": median ms per forward at `latency_batch`, "throughput_seq_per_s": sequences per second at
    `throughput_batch`} for `forward` on `device`."""
    timing = {"device": device, "seq_len": seq_len, "vocab_size": vocab_size, "warmup": warmup, "repeats": repeats}
    latency = median_forward_seconds(forward, batch_size=latency_batch, **timing)
    per_batch = median_forward_seconds(forward, batch_size=throughput_batch, **timing)
    return {"latency_ms": 1000.0 * latency, "throughput_seq_per_s": throughput_batch / per_batch}
