"""Rows from text documents, tokenized on the fly and split across reader slots by block.

The document stream of a pass is cut into blocks of `documents_per_block` consecutive documents. Block b is read by
slot b % num_slots (a slot is one (rank, dataloader worker) pair); each block is tokenized and packed on its own
(its tail shorter than a row is dropped). The rows of one pass are therefore the same whatever the number of
slots: the union over slots of their rows is exactly the single-slot stream. Blocks that belong to other slots
are skipped without tokenizing.

A position is `(pass, block, row)`: the next row to produce is row `row` of block `block` in pass `pass`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

from distil.data.corpus import Corpus
from distil.data.packing import RowFormat, concatenate_documents, pack_rows

Position = tuple[int, int, int]


def batched(iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class EmptySlotError(RuntimeError):
    """A reader slot got no row in a whole pass over the corpus."""


class TextRows:
    """Packed rows of one slot, from the training documents of a Corpus, forever (pass after pass)."""

    initial_position: Position = (0, 0, 0)

    def __init__(
        self,
        corpus: Corpus,
        encode: Callable[[list[str]], list[list[int]]],
        max_length: int,
        row_format: RowFormat,
        documents_per_block: int,
    ) -> None:
        self.corpus = corpus
        self.encode = encode
        self.max_length = max_length
        self.row_format = row_format
        self.documents_per_block = documents_per_block

    def block_rows(self, documents: list[str]) -> np.ndarray:
        tokens = concatenate_documents(self.encode(documents), self.row_format.separator)
        return pack_rows(tokens, self.max_length, self.row_format)

    def pass_rows(
        self, pass_index: int, slot: int, num_slots: int, start: Position
    ) -> Iterator[tuple[np.ndarray, Position]]:
        """This slot's rows of one pass from `start`, each with the position that follows it."""
        blocks = batched(self.corpus.training_documents(pass_index), self.documents_per_block)
        for block_index, documents in enumerate(blocks):
            if block_index % num_slots != slot or (pass_index, block_index) < start[:2]:
                continue
            first_row = start[2] if (pass_index, block_index) == start[:2] else 0
            rows = self.block_rows(documents)
            for row_index in range(first_row, len(rows)):
                yield rows[row_index], (pass_index, block_index, row_index + 1)

    def rows(self, slot: int, num_slots: int, start: Position = (0, 0, 0)) -> Iterator[tuple[np.ndarray, Position]]:
        """This slot's rows from `start` on, pass after pass; a full pass without a row is an error."""
        for pass_index in itertools.count(start[0]):
            produced = 0
            for row, position in self.pass_rows(pass_index, slot, num_slots, start):
                produced += 1
                yield row, position
            if produced == 0 and (pass_index > start[0] or start == (pass_index, 0, 0)):
                raise EmptySlotError(
                    f"reader slot {slot} of {num_slots} (ranks x dataloader workers) got no row of "
                    f"{self.max_length} tokens in a whole pass: the training text is too small for this many readers. "
                    f"Lower documents_per_block ({self.documents_per_block}) or num_workers, or add text"
                )
