"""Throughput of the training loader: tokens delivered per second by one process."""

from __future__ import annotations

import itertools
import time

import torch
from torch.utils.data import DataLoader


def measure_tokens_per_second(loader: DataLoader, batches: int, warmup: int = 5, clock=time.perf_counter) -> float:
    """Real tokens (attention_mask ones) per second of `clock` over `batches` batches, after `warmup` batches.
    With num_workers=0 it runs with one torch thread, as a dataloader worker process does; with
    clock=time.process_time it counts this process's CPU seconds (robust to other load on the machine)."""
    threads = torch.get_num_threads()
    if loader.num_workers == 0:
        torch.set_num_threads(1)
    try:
        iterator = iter(loader)
        for _ in range(warmup):
            next(iterator)
        start = clock()
        tokens = sum(int(batch["attention_mask"].sum()) for batch in itertools.islice(iterator, batches))
        return tokens / (clock() - start)
    finally:
        torch.set_num_threads(threads)


def measure_shard_loader(
    shards_dir: str,
    tokenizer: str,
    max_length: int,
    batch_size: int,
    batches: int,
    causal: bool = False,
    clock=time.perf_counter,
) -> float:
    """Tokens/s of the shard loader in the calling process (num_workers=0: one worker's share of the work)."""
    from distil.data.datamodule import CorpusDataModule

    datamodule = CorpusDataModule(
        tokenizer, causal, shards_dir=shards_dir, max_length=max_length, batch_size=batch_size, num_workers=0
    )
    return measure_tokens_per_second(datamodule.train_dataloader(), batches, clock=clock)
