"""Rows that say which of their tokens are learned, and their causal-LM batches (instruction examples: the response).

A `ScoredRow` is a row of token ids, up to `max_length` long, with a `scored` mask beside it. `ScoredRowCollator` pads
a batch of them and labels position t with the token at t + 1 only where that token is scored
(`next_token.next_token_labels`): prompt and padding positions get -100, so the label loss and, with
`distill.kl_positions: masked`, the soft targets count response tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distil.data.next_token import NextTokenCollator, next_token_labels
from distil.data.packing import pad_rows


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
