"""Packing: documents joined by [SEP], cut into full [CLS] ... [SEP] rows, the short tail dropped."""

import numpy as np

from distil.data.packing import concatenate_documents, pack_rows

CLS, SEP = 2, 3


def test_documents_are_joined_by_sep():
    flat = concatenate_documents([[10, 11, 12], [20], [30, 31]], SEP)
    assert flat.tolist() == [10, 11, 12, SEP, 20, SEP, 30, 31, SEP]


def test_rows_are_framed_full_and_the_tail_is_dropped():
    flat = concatenate_documents([[10, 11, 12], [20], [30, 31]], SEP)  # 9 tokens
    rows = pack_rows(flat, max_length=5, cls_id=CLS, sep_id=SEP)  # 3 content tokens per row
    assert rows.dtype == np.int64
    assert rows.tolist() == [
        [CLS, 10, 11, 12, SEP],
        [CLS, SEP, 20, SEP, SEP],
        [CLS, 30, 31, SEP, SEP],
    ]
    assert pack_rows(flat[:8], 5, CLS, SEP).shape == (2, 5)


def test_fewer_tokens_than_a_row_give_no_row():
    assert pack_rows(np.arange(5), max_length=8, cls_id=CLS, sep_id=SEP).shape == (0, 8)
