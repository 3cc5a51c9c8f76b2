"""Fixtures shared by all tests: tiny models built in memory, and the ../shared assets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    ModernBertConfig,
    PreTrainedModel,
    RobertaConfig,
    XLMRobertaConfig,
)

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


FAMILY_TYPES = ("bert", "roberta", "xlm-roberta", "modernbert")  # a teacher model_type of each family (XLM-R twice)


def tiny_config(model_type: str = "bert", num_layers: int = 4, vocab_size: int = 64, special_ids=None):
    """A masked-LM config small enough for unit tests: hidden 32, 4 heads, FFN 64, rows of up to 64 tokens.

    `special_ids` (pad, bos/cls, eos/sep) defaults to the ids of the tiny vocabularies of `masked_batch`: padding 0
    for every family, as `masked_batch` pads with 0. ModernBERT gets 6 layers' worth of its attention pattern with a
    local window of 8 tokens, so rows of 16 see both kinds."""
    pad, start, end = special_ids or (0, 2, 3)
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=pad,
    )
    if model_type == "bert":
        return BertConfig(**shape, max_position_embeddings=64)
    if model_type in ("roberta", "xlm-roberta"):
        config_class = RobertaConfig if model_type == "roberta" else XLMRobertaConfig
        return config_class(**shape, max_position_embeddings=64 + pad + 1, bos_token_id=start, eos_token_id=end)
    if model_type == "modernbert":
        ids = dict(bos_token_id=start, cls_token_id=start, eos_token_id=end, sep_token_id=end)
        return ModernBertConfig(**shape, **ids, max_position_embeddings=64, local_attention=8)
    raise ValueError(f"no tiny config for model_type {model_type!r}")


def tiny_masked_lm(
    model_type: str = "bert", num_layers: int = 4, vocab_size: int = 64, seed: int = 0, special_ids=None
):
    """A randomly initialised masked-LM of `tiny_config`, in eval mode, every parameter moved off its initial value
    (LayerNorm weights off 1, biases off 0, BERT's token-type rows apart), so that a forgotten copy shows up."""
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(tiny_config(model_type, num_layers, vocab_size, special_ids)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        if model_type == "bert":
            model.bert.embeddings.token_type_embeddings.weight.normal_(0.0, 0.5)
    return model


@pytest.fixture
def tiny_teacher() -> PreTrainedModel:
    return tiny_masked_lm()


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
    tiny_masked_lm(vocab_size=128).save_pretrained(directory)
    return directory
