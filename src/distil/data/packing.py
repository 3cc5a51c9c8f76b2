"""Token ids of documents -> fixed-length rows `[CLS] ... [SEP]`, documents joined by [SEP] (RoBERTa FULL-SENTENCES).

Every document is followed by [SEP]; the concatenation is cut into pieces of `max_length - 2` tokens and each
piece is framed by [CLS] and [SEP]. The last piece, shorter than a row, is dropped, so every row is full and
unpadded (a row may therefore start or end with the [SEP] that closes a document).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def concatenate_documents(documents: Sequence[Sequence[int]], sep_id: int, dtype=np.int64) -> np.ndarray:
    """The ids of all documents, each followed by [SEP], as one flat array."""
    lengths = [len(ids) + 1 for ids in documents]
    flat = np.empty(sum(lengths), dtype=dtype)
    position = 0
    for ids, length in zip(documents, lengths):
        flat[position : position + length - 1] = ids
        flat[position + length - 1] = sep_id
        position += length
    return flat


def pack_rows(tokens: np.ndarray, max_length: int, cls_id: int, sep_id: int) -> np.ndarray:
    """Rows (n, max_length) of int64 from a flat token array; the tail shorter than a row is dropped."""
    content = max_length - 2
    n_rows = len(tokens) // content
    rows = np.empty((n_rows, max_length), dtype=np.int64)
    rows[:, 0] = cls_id
    rows[:, 1:-1] = tokens[: n_rows * content].reshape(n_rows, content)
    rows[:, -1] = sep_id
    return rows
