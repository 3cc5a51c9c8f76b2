"""Token ids of documents -> fixed-length rows, in the `RowFormat` of the model: `[CLS] ... [SEP]` rows of documents
joined by [SEP] for a masked LM (RoBERTa FULL-SENTENCES), plain rows of documents joined by end-of-text for a causal LM.

Every document is followed by the separator; the concatenation is cut into pieces of the row's content length and
each piece is framed. The last piece, shorter than a row, is dropped, so every row is full and unpadded (a row may
therefore start or end with the separator that closes a document). Rows shorter than `max_length` (instruction
examples) are padded by `pad_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distil.data.row_format import RowFormat


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
