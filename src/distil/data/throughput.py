"""Throughput of the training loader: tokens delivered per second by one process."""

from __future__ import annotations

import itertools
import time

import torch
from torch.utils.data import DataLoader


def measure_tokens_per_second(loader: DataLoader, batches: int, warmup: int = 5) -> float:
    """Real tokens (attention_mask ones) per second over `batches` batches, after `warmup` batches. With
    num_workers=0 it runs with one torch thread, as a dataloader worker process does."""
    threads = torch.get_num_threads()
    if loader.num_workers == 0:
        torch.set_num_threads(1)
    try:
        iterator = iter(loader)
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        tokens = sum(int(batch["attention_mask"].sum()) for batch in itertools.islice(iterator, batches))
        return tokens / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def measure_shard_loader(shards_dir: str, tokenizer: str, max_length: int, batch_size: int, batches: int) -> float:
    """Tokens/s of the shard loader in the calling process (num_workers=0: one worker's share of the work)."""
    from distil.data.datamodule import CorpusDataModule

    datamodule = CorpusDataModule(tokenizer, shards_dir=shards_dir, max_length=max_length, batch_size=batch_size,
                                  num_workers=0)
    return measure_tokens_per_second(datamodule.train_dataloader(), batches)
