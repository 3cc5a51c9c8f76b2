"""Rows of instruction examples, one example per row, split across reader slots by example.

The first `val_documents` examples are the validation set and never train. Of the rest, in file order every pass,
example i is read by slot i % num_slots (a slot is one (rank, dataloader worker) pair) and encoded into one
`ScoredRow` (`encoder`: `distil.data.instruction_encoding.InstructionEncoder`); examples of other slots are skipped
without tokenizing, so the union over slots of their rows is exactly the single-slot stream. Examples are never
packed together: the collator pads each row to max_length.

A position is `(pass, example)`: the next row is that of training example `example` (or the first of this slot
after it) in pass `pass`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from distil.data.instruction_examples import InstructionExample, InstructionFiles
from distil.data.next_token import ScoredRow
from distil.data.text_rows import EmptySlotError

Position = tuple[int, int]


class InstructionRows:
    """One slot's rows of the training examples of `files`, pass after pass."""

    initial_position: Position = (0, 0)

    def __init__(
        self, files: InstructionFiles, encoder: Callable[[InstructionExample], ScoredRow], val_documents: int
    ) -> None:
        self.files = files
        self.encoder = encoder
        self.val_documents = val_documents

    def validation_examples(self) -> Iterator[InstructionExample]:
        return itertools.islice(self.files.examples(), self.val_documents)

    def training_examples(self) -> Iterator[InstructionExample]:
        return itertools.islice(self.files.examples(), self.val_documents, None)

    def rows(self, slot: int, num_slots: int, start: Position = (0, 0)) -> Iterator[tuple[ScoredRow, Position]]:
        """This slot's rows from `start` on, pass after pass; a full pass without a row is an error."""
        for pass_index in itertools.count(start[0]):
            first = start[1] if pass_index == start[0] else 0
            produced = 0
            for index, example in enumerate(self.training_examples()):
                if index % num_slots == slot and index >= first:
                    produced += 1
                    yield self.encoder(example), (pass_index, index + 1)
            if produced == 0 and first == 0:
                raise EmptySlotError(
                    f"reader slot {slot} of {num_slots} (ranks x dataloader workers) got no example in a whole pass: "
                    f"{self.files.name} holds fewer training examples (after the first val_documents="
                    f"{self.val_documents}) than readers. Lower num_workers or val_documents, or add examples"
                )
