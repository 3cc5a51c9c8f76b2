"""A model folder's tokenizer must have vocabulary files and produce only ids the model has embeddings for."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from distil.data.tokenization import check_tokenizer_matches, load_tokenizer


def test_a_folder_without_tokenizer_files_is_named_instead_of_getting_a_fallback_tokenizer(model_without_tokenizer_dir):
    fallback = AutoTokenizer.from_pretrained(model_without_tokenizer_dir)
    assert len(fallback) == 5  # what transformers does on its own: every word becomes [UNK]
    expected = f"model='{model_without_tokenizer_dir}' has no tokenizer files"
    with pytest.raises(ValueError, match=expected):
        check_tokenizer_matches(fallback, str(model_without_tokenizer_dir), "model", 128, "its model")
    with pytest.raises(ValueError, match=f"data.tokenizer='{model_without_tokenizer_dir}' has no tokenizer files"):
        load_tokenizer(str(model_without_tokenizer_dir))


def test_a_tokenizer_with_ids_beyond_the_embeddings_is_refused_and_a_padded_embedding_matrix_is_fine(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    assert len(tokenizer) == 128
    with pytest.raises(
        ValueError,
        match=rf"tokenizer='{tiny_teacher_dir}' has 128 tokens but the student has 100 token embeddings: ids 100..127",
    ):
        check_tokenizer_matches(tokenizer, str(tiny_teacher_dir), "tokenizer", 100, "the student")
    check_tokenizer_matches(tokenizer, str(tiny_teacher_dir), "tokenizer", 128, "the student")
    check_tokenizer_matches(tokenizer, str(tiny_teacher_dir), "tokenizer", 136, "the student")  # padded embeddings
