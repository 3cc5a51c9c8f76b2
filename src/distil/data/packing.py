"""Token ids of documents -> fixed-length rows, in the `RowFormat` of the model, read from its tokenizer:
`[CLS] ... [SEP]` rows of documents joined by [SEP] for a masked LM (RoBERTa's FULL-SENTENCES packing), plain rows of
documents joined by end-of-text for a causal LM (GPT-2's and Llama's pretraining: GPT-2's `<|endoftext|>`, Llama 3's
`<|end_of_text|>`), so that every position of a full causal row is a real token the model learns from.

Every document is followed by the separator; the concatenation is cut into pieces of the row's content length and
each piece is framed. The last piece, shorter than a row, is dropped, so every row is full and unpadded (a row may
therefore start or end with the separator that closes a document). Rows shorter than `max_length` (instruction
examples) are padded by `pad_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RowFormat:
    """Documents joined by `separator`; each row is `start + content + end`.

    Args:
        separator: the id that follows every document in the token stream.
        start, end: ids framing every row (empty for causal rows).
        causal: rows for a causal LM (labels are the next tokens) rather than a masked LM (labels come from masking).
    """

    separator: int
    start: tuple[int, ...] = ()
    end: tuple[int, ...] = ()
    causal: bool = False

    def content_length(self, max_length: int) -> int:
        """Tokens of the stream in a row of `max_length` tokens."""
        return max_length - len(self.start) - len(self.end)

    @classmethod
    def of(cls, tokenizer, causal: bool) -> RowFormat:
        """The format of the tokenizer's own special tokens (checked by `tokenization.load_tokenizer`)."""
        if causal:
            return cls(separator=tokenizer.eos_token_id, causal=True)
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        return cls(separator=sep_id, start=(cls_id,), end=(sep_id,))


def concatenate_documents(documents: Sequence[Sequence[int]], separator: int, dtype=np.int64) -> np.ndarray:
    """The ids of all documents, each followed by `separator`, as one flat array."""
    lengths = [len(ids) + 1 for ids in documents]
    flat = np.empty(sum(lengths), dtype=dtype)
    position = 0
    for ids, length in zip(documents, lengths):
        flat[position : position + length - 1] = ids
        flat[position + length - 1] = separator
        position += length
    return flat


def pack_rows(tokens: np.ndarray, max_length: int, row_format: RowFormat) -> np.ndarray:
    """Rows (n, max_length) of int64 from a flat token array; the tail shorter than a row is dropped."""
    content = row_format.content_length(max_length)
    n_rows = len(tokens) // content
    rows = np.empty((n_rows, max_length), dtype=np.int64)
    frame_rows(rows, row_format)
    rows[:, len(row_format.start) : max_length - len(row_format.end)] = tokens[: n_rows * content].reshape(
        n_rows, content
    )
    return rows


def frame_rows(rows: np.ndarray, row_format: RowFormat) -> None:
    """Write the row format's framing ids into the first and last columns of `rows` (n, max_length)."""
    start, end = row_format.start, row_format.end
    if start:
        rows[:, : len(start)] = start
    if end:
        rows[:, rows.shape[1] - len(end) :] = end


def pad_rows(rows: list[np.ndarray], max_length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows stacked into (B, max_length) int64 ids and attention mask; rows shorter than max_length are padded."""
    if all(len(row) == max_length for row in rows):
        ids = torch.from_numpy(np.stack(rows).astype(np.int64, copy=False))
        return ids, torch.ones((len(rows), max_length), dtype=torch.long)
    input_ids = torch.full((len(rows), max_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask
