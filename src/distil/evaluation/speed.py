"""Inference speed of a model on one device: median latency of one forward pass and the throughput it implies.

Timed with `torch.utils.benchmark.Timer.blocked_autorange`, which warms up, synchronizes CUDA around the timed
blocks and runs blocks until `min_run_time` seconds have passed; the median over blocks is reported. Inputs are random
token ids of a fixed length with a full attention mask (the token values do not change the cost).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import benchmark
from transformers import PreTrainedModel

from distil.families import model_parts

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def timed_forward(model: PreTrainedModel, with_mlm_head: bool):
    """What is timed: the encoder alone (what a downstream task runs), or with the vocabulary head on every position
    (the model's whole forward; a causal LM's without its key-value cache, as the model parts run it)."""
    parts = model_parts(model)
    if with_mlm_head:
        return lambda input_ids, attention_mask: parts.vocab_head(parts.encode(input_ids, attention_mask))
    return parts.encode


@torch.inference_mode()
def median_forward_seconds(
    forward: Forward,
    device: torch.device,
    batch_size: int,
    max_length: int,
    vocab_size: int,
    min_run_time: float,
    seed: int = 0,
) -> float:
    """Median wall-clock seconds of `forward(input_ids, attention_mask)` on a (batch_size, max_length) batch; its
    parameters must already live on `device`."""
    if batch_size < 1 or max_length < 1 or not min_run_time > 0:
        raise ValueError(
            f"batch_size={batch_size} and max_length={max_length} must be >= 1 and min_run_time={min_run_time} > 0"
        )
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, max_length), generator=generator).to(device)
    timer = benchmark.Timer(
        stmt="forward(input_ids, attention_mask)",
        globals={"forward": forward, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)},
        num_threads=torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median


def measure_speed(
    forward: Forward,
    device: torch.device,
    vocab_size: int,
    max_length: int,
    latency_batch: int,
    throughput_batch: int,
    min_run_time: float,
) -> dict[str, float]:
    """{"latency_ms": median ms per forward at `latency_batch`, "throughput_seq_per_s": sequences per second at
    `throughput_batch`} for `forward` on `device`."""
    timing = {"device": device, "max_length": max_length, "vocab_size": vocab_size, "min_run_time": min_run_time}
    latency = median_forward_seconds(forward, batch_size=latency_batch, **timing)
    per_batch = median_forward_seconds(forward, batch_size=throughput_batch, **timing)
    return {"latency_ms": 1000.0 * latency, "throughput_seq_per_s": throughput_batch / per_batch}
