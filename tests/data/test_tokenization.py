"""A model folder's tokenizer must have vocabulary files and produce only ids the model has embeddings for; documents
above a length bound are tokenized in pieces."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from distil.data.tokenization import TextEncoder, check_tokenizer_matches, load_tokenizer, read_tokenizer
from tests.tiny_assets import WORDS


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


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda text: text[: len(text) // 2], "tokenizer.json is not valid JSON"),  # a truncated copy
        (lambda text: json.dumps({**json.loads(text), "model": {"type": "Nonsense"}}), "Exception: "),
    ],
)
def test_a_tokenizer_file_that_cannot_be_read_is_named_with_its_key(tmp_path, tiny_teacher_dir, content, reason):
    shutil.copytree(tiny_teacher_dir, tmp_path / "teacher")
    path = tmp_path / "teacher" / "tokenizer.json"
    path.write_text(content(path.read_text()))
    with pytest.raises(
        ValueError, match=f"data.tokenizer='{tmp_path / 'teacher'}' has a tokenizer that cannot be read.*{reason}"
    ):
        load_tokenizer(str(tmp_path / "teacher"))
    with pytest.raises(ValueError, match=f"model='{tmp_path / 'teacher'}' has a tokenizer that cannot be read"):
        read_tokenizer(str(tmp_path / "teacher"), "model")


class RecordingTokenizer:
    """The tokenizer, recording the length of every text it is given."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.lengths = tokenizer, []

    def __call__(self, texts, **kwargs):
        self.lengths += [len(text) for text in texts]
        return self.tokenizer(texts, **kwargs)


def random_text(words: int, seed: int = 0) -> str:
    """Words of the tiny vocabulary joined by single spaces, double spaces, newlines and tabs."""
    rng = random.Random(seed)
    separators = [" ", " ", " ", "  ", "\n", "\n\n", " \t "]
    return "".join(rng.choice(WORDS) + rng.choice(separators) for _ in range(words)) + "the end ."


def trained_tokenizer(kind) -> PreTrainedTokenizerFast:
    """A small byte-level BPE or SentencePiece (Metaspace) tokenizer trained on random text."""
    raw = kind()
    raw.train_from_iterator([random_text(2000, seed=1)], vocab_size=300)
    return PreTrainedTokenizerFast(tokenizer_object=raw._tokenizer)


@pytest.mark.parametrize(
    "kind", [ByteLevelBPETokenizer, SentencePieceBPETokenizer], ids=["byte_level", "sentencepiece"]
)
def test_pieces_give_the_ids_of_the_whole_document_with_other_tokenizer_kinds(kind):
    tokenizer, document = trained_tokenizer(kind), random_text(400)
    whole = tokenizer([document], add_special_tokens=False)["input_ids"][0]
    assert TextEncoder(tokenizer, max_characters=100)([document])[0].tolist() == whole


def test_a_document_above_the_bound_is_tokenized_in_pieces_with_the_ids_of_the_whole(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    long_document = random_text(400)
    short_document = "the king opened the door ."
    recording = RecordingTokenizer(tokenizer)
    ids = TextEncoder(recording, max_characters=100)([short_document, long_document])
    whole = tokenizer([short_document, long_document], add_special_tokens=False)["input_ids"]
    assert [list(map(int, document)) for document in ids] == whole
    assert len(long_document) > 2000 and max(recording.lengths) <= 100
    assert recording.lengths.count(len(short_document)) == 1  # documents within the bound are tokenized whole


def test_a_piece_without_whitespace_is_cut_at_the_bound(tiny_teacher_dir):
    recording = RecordingTokenizer(AutoTokenizer.from_pretrained(tiny_teacher_dir))
    (ids,) = TextEncoder(recording, max_characters=100)(["x" * 450])
    assert recording.lengths == [100, 100, 100, 100, 50] and len(ids) > 0
