"""Fixtures shared by all tests: tiny models built in memory, and the ../shared assets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"  # the Hydra config tree


def shared_assets_dir() -> Path:
    return Path(os.environ.get("DISTIL_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    """The shared assets folder; the test is skipped when it is absent (e.g. a fresh clone elsewhere)."""
    path = shared_assets_dir()
    if not (path / "models" / "bert-teacher-12x256").is_dir():
        pytest.skip(f"shared assets not found at {path} (set DISTIL_SHARED to the folder holding models/ and data/)")
    return path


def tiny_bert_config(num_layers: int = 4, vocab_size: int = 64) -> BertConfig:
    """A BERT small enough for unit tests: hidden 32, 4 heads, FFN 64, up to 64 positions."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )


def tiny_bert(num_layers: int = 4, vocab_size: int = 64, seed: int = 0) -> BertForMaskedLM:
    """A randomly initialised BertForMaskedLM of `tiny_bert_config`."""
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_bert_config(num_layers, vocab_size)).eval()
    with torch.no_grad():  # non-trivial token-type row and biases, so a forgotten copy shows up
        model.bert.embeddings.token_type_embeddings.weight.normal_(0.0, 0.5)
        model.cls.predictions.bias.normal_(0.0, 0.5)
    return model


@pytest.fixture
def tiny_teacher() -> BertForMaskedLM:
    return tiny_bert()


def masked_batch(vocab_size: int = 64, batch: int = 3, length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with padding at the end of row 1 and 3 masked positions per row (labels -100 elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, length - 5 :] = 0
    input_ids[attention_mask == 0] = 0
    labels = torch.full((batch, length), -100)
    for row in range(batch):
        positions = torch.randperm(length - 6, generator=generator)[:3] + 1  # inside the real tokens of every row
        labels[row, positions] = input_ids[row, positions]
        input_ids[row, positions] = 4  # the [MASK] id of these tiny vocabularies
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A tiny BERT teacher + WordPiece tokenizer saved on disk (see tests/tiny_assets.py)."""
    from tests.tiny_assets import write_tiny_teacher

    return write_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A folder of small .txt files (blank-line-separated documents) over the tiny tokenizer's words."""
    from tests.tiny_assets import write_tiny_corpus

    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def model_without_tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny BERT (128-token vocabulary) saved without tokenizer files: transformers 5 builds a 5-token tokenizer
    for such a folder on its own."""
    directory = tmp_path_factory.mktemp("no_tokenizer")
    tiny_bert(vocab_size=128).save_pretrained(directory)
    return directory
