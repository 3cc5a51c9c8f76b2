"""Causal-LM batches: rows of token ids -> input_ids, attention_mask and the shifted next-token labels; and rows that
say which of their tokens are learned (`ScoredRow`: an instruction example, whose response is learned).

The label of position t is the token at t + 1, so the objective reads the logits of a position against its label
exactly as it reads a masked position against the original token (one loss function for both kinds). Positions
without a next real token (the last one of a row, padding) get -100, and so do the positions whose next token is not
to be learned (the prompt of an instruction example: `ScoredRow.scored`). Nothing is random: the generator of the
collator's call is taken, as the masking collator's is, and not read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distil.data.packing import pad_rows
from distil.modules.losses import IGNORE_INDEX


def next_token_labels(input_ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """(B, L) labels: `input_ids[:, t + 1]` where `scored[:, t + 1]` (a real token to learn), -100 elsewhere."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = torch.where(scored[:, 1:].bool(), input_ids[:, 1:], IGNORE_INDEX)
    return labels


class NextTokenCollator:
    """Turns rows of token ids into a causal-LM batch: input_ids, attention_mask, labels (all int64, (B, L))."""

    def __init__(self, pad_id: int, max_length: int) -> None:
        self.pad_id = pad_id
        self.max_length = max_length

    @classmethod
    def from_tokenizer(cls, tokenizer, max_length: int) -> NextTokenCollator:
        """Padding with the tokenizer's pad token, or its end-of-text token when it has none (GPT-2)."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(pad_id, max_length)

    def __call__(self, rows: list[np.ndarray], generator: torch.Generator | None = None) -> dict:
        input_ids, attention_mask = pad_rows(rows, self.max_length, self.pad_id)
        labels = next_token_labels(input_ids, attention_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass(frozen=True)
class ScoredRow:
    """Token ids (int64, (n,)) and whether each is a token to learn (bool, (n,))."""

    ids: np.ndarray
    scored: np.ndarray


class ScoredRowCollator(NextTokenCollator):
    """Turns `ScoredRow`s into a causal-LM batch: input_ids, attention_mask, labels (all int64, (B, max_length)),
    rows padded at their end."""

    def __call__(self, rows: list[ScoredRow], generator: torch.Generator | None = None) -> dict:
        input_ids, attention_mask = pad_rows([row.ids for row in rows], self.max_length, self.pad_id)
        scored, _ = pad_rows([row.scored for row in rows], self.max_length, 0)
        labels = next_token_labels(input_ids, scored)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
