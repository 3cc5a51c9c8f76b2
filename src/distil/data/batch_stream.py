"""The training IterableDataset: rows of this (rank, worker) slot -> masked batches, resumable by position.

Each batch comes with its stream position (int64: slot, then the slot's position after the batch), beside it, not in
it: `PositionedLoader` yields the batch alone (model inputs only) and queues the position, so that the data module
can record what the trainer consumed. Masking is seeded by (seed, slot, position of the batch's first row): a resumed
run masks exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distil.data.masking import MaskingCollator, seeded_generator


class BatchStream(IterableDataset):
    """Masked batches of `batch_size` rows for the reader slot (rank, worker) of the process iterating it."""

    def __init__(
        self,
        rows,
        collator: MaskingCollator,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_positions: dict[int, tuple[int, ...]] | None = None,
    ) -> None:
        self.rows = rows
        self.collator = collator
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_positions = dict(start_positions or {})

    def slot(self) -> tuple[int, int]:
        """(this reader's slot, number of slots) from the rank and the dataloader worker."""
        worker = get_worker_info()
        num_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        return self.rank * num_workers + worker_id, self.world_size * num_workers

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """(batch, stream position after it) pairs of this reader's slot."""
        slot, num_slots = self.slot()
        batch_start = tuple(self.start_positions.get(slot, self.rows.initial_position))
        pending: list[np.ndarray] = []
        for row, position in self.rows.rows(slot, num_slots, batch_start):
            pending.append(row)
            if len(pending) == self.batch_size:
                batch = self.collator(pending, seeded_generator(self.seed, slot, *batch_start))
                yield batch, torch.tensor([slot, *position], dtype=torch.long)
                pending = []
                batch_start = position


class PositionedLoader(DataLoader):
    """The DataLoader of a `BatchStream`: yields its batches and queues their stream positions, in the same order.

    The trainer fetches batches ahead of using them, so a position is taken off the queue (`take_position`) only when
    its batch is used; the queue then never holds more than the batches fetched ahead.
    """

    def __init__(self, stream: BatchStream, **kwargs) -> None:
        super().__init__(stream, batch_size=None, **kwargs)
        self.positions: deque[torch.Tensor] = deque()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.positions.clear()
        for batch, position in super().__iter__():
            self.positions.append(position)
            yield batch

    def take_position(self) -> tuple[int, tuple[int, ...]]:
        """(slot, position after the batch) of the oldest batch yielded and not yet used."""
        slot, *position = self.positions.popleft().tolist()
        return int(slot), tuple(int(p) for p in position)
