"""Packing: documents joined by the separator, cut into full rows ([CLS] ... [SEP] for a masked LM, unframed for a
causal LM), the short tail dropped."""

import numpy as np

from distil.data.packing import RowFormat, concatenate_documents, pack_rows

CLS, SEP, EOS = 2, 3, 0
MASKED = RowFormat(separator=SEP, start=(CLS,), end=(SEP,))
CAUSAL = RowFormat(separator=EOS, causal=True)


def test_documents_are_joined_by_sep():
    flat = concatenate_documents([[10, 11, 12], [20], [30, 31]], SEP)
    assert flat.tolist() == [10, 11, 12, SEP, 20, SEP, 30, 31, SEP]


def test_rows_are_framed_full_and_the_tail_is_dropped():
    flat = concatenate_documents([[10, 11, 12], [20], [30, 31]], SEP)  # 9 tokens
    rows = pack_rows(flat, max_length=5, row_format=MASKED)  # 3 content tokens per row
    assert rows.dtype == np.int64
    assert rows.tolist() == [
        [CLS, 10, 11, 12, SEP],
        [CLS, SEP, 20, SEP, SEP],
        [CLS, 30, 31, SEP, SEP],
    ]
    assert pack_rows(flat[:8], 5, MASKED).shape == (2, 5)


def test_causal_rows_are_the_stream_cut_into_full_rows_without_framing():
    flat = concatenate_documents([[10, 11, 12], [20], [30, 31]], EOS)  # 9 tokens
    rows = pack_rows(flat, max_length=4, row_format=CAUSAL)
    assert rows.tolist() == [[10, 11, 12, EOS], [20, EOS, 30, 31]]  # the tail [EOS] is dropped


def test_fewer_tokens_than_a_row_give_no_row():
    assert pack_rows(np.arange(5), max_length=8, row_format=MASKED).shape == (0, 8)
    assert pack_rows(np.arange(7), max_length=8, row_format=CAUSAL).shape == (0, 8)
