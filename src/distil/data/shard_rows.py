"""Rows read from pre-tokenized shards by index arithmetic: no tokenization, O(1) seek, exact sharding.

The training shards form one token stream; row r holds tokens [r*C, (r+1)*C) with C the row's content length, framed
as the `RowFormat` says (masked rows by [CLS] and [SEP], C = L - 2; causal rows not at all, C = L; rows may cross
document and shard borders; the tail shorter than a row is dropped). Each pass visits all rows in
an order that is a seeded permutation per pass (or the stored order); slot s of S reads entries s, s+S, s+2S...
of that order. A position is `(pass, k)`: the next row is the slot's k-th row of pass `pass`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from distil.data.packing import RowFormat, frame_rows
from distil.data.shards import open_split

Position = tuple[int, int]


class IndexedRow(NamedTuple):
    """A row of token ids, its index in the shards and the pass that reads it (`ShardRows(indexed=True)`: a teacher
    cache finds the row's masks and outputs by them, `distil.topk_cache.stream`)."""

    ids: np.ndarray
    index: int
    pass_index: int


class ShardRows:
    """One slot's rows of the training shards, pass after pass."""

    initial_position: Position = (0, 0)

    def __init__(
        self,
        directory: str,
        metadata: dict,
        max_length: int,
        row_format: RowFormat,
        shuffle: bool,
        seed: int,
        indexed: bool = False,
    ) -> None:
        self.directory = directory
        self.metadata = metadata
        self.max_length = max_length
        self.row_format = row_format
        self.content = row_format.content_length(max_length)
        self.shuffle = shuffle
        self.seed = seed
        self.indexed = indexed  # yield `IndexedRow`s instead of bare rows
        self.num_rows = metadata["splits"]["train"]["tokens"] // self.content
        if self.num_rows == 0:
            raise ValueError(
                f"shards in {directory} hold {metadata['splits']['train']['tokens']} training tokens, "
                f"less than one row of max_length={max_length}"
            )
        self.shards: list[np.ndarray] | None = None  # memory maps, opened in the process that reads them

    def open(self) -> tuple[list[np.ndarray], np.ndarray]:
        if self.shards is None:
            self.shards = open_split(self.directory, self.metadata, "train")
        starts = np.cumsum([0] + [len(shard) for shard in self.shards])
        return self.shards, starts

    def pass_order(self, pass_index: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows, dtype=np.int64)
        return np.random.default_rng([self.seed, pass_index]).permutation(self.num_rows)

    def read_rows(self, row_indices: np.ndarray) -> np.ndarray:
        """Rows (n, max_length) int64 for global row indices."""
        shards, starts = self.open()
        content, first = self.content, len(self.row_format.start)
        rows = np.empty((len(row_indices), self.max_length), dtype=np.int64)
        frame_rows(rows, self.row_format)
        for i, row_index in enumerate(row_indices):
            begin = int(row_index) * content
            shard = int(np.searchsorted(starts, begin, side="right")) - 1
            offset = begin - starts[shard]
            if offset + content <= len(shards[shard]):
                rows[i, first : first + content] = shards[shard][offset : offset + content]
            else:  # the row crosses into the next shard(s)
                pieces, needed = [], content
                while needed:
                    piece = shards[shard][offset : offset + needed]
                    pieces.append(piece)
                    needed -= len(piece)
                    shard, offset = shard + 1, 0
                rows[i, first : first + content] = np.concatenate(pieces)
        return rows

    def rows(self, slot: int, num_slots: int, start: Position = (0, 0)) -> Iterator[tuple[np.ndarray, Position]]:
        if self.num_rows < num_slots:
            raise RuntimeError(
                f"reader slot {slot} of {num_slots} (ranks x dataloader workers) gets no row: shards "
                f"hold only {self.num_rows} rows of {self.max_length} tokens; lower num_workers"
            )
        chunk = 256
        for pass_index in itertools.count(start[0]):
            mine = self.pass_order(pass_index)[slot::num_slots]
            first = start[1] if pass_index == start[0] else 0
            for chunk_start in range(first, len(mine), chunk):
                indices = mine[chunk_start : chunk_start + chunk]
                for k, (row, index) in enumerate(zip(self.read_rows(indices), indices), start=chunk_start + 1):
                    yield self.item(row, int(index), pass_index), (pass_index, k)

    def item(self, row: np.ndarray, row_index: int, pass_index: int) -> np.ndarray | IndexedRow:
        """What the stream yields for row `row_index` in pass `pass_index`: the row, or with `indexed` an
        `IndexedRow`."""
        return IndexedRow(row, row_index, pass_index) if self.indexed else row
