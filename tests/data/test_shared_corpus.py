"""Real-data tests on the shared Wikipedia + book text and the shared teacher's tokenizer (skipped when absent)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from distil.data.shards import read_metadata
from distil.prepare import prepare
from tests.conftest import compose_config


def demo_data_config(shared_dir: Path):
    return compose_config("train", f"paths.shared_dir={shared_dir}")


@pytest.mark.shared
def test_demo_config_reads_the_shared_corpus_into_full_masked_rows(shared_dir):
    cfg = demo_data_config(shared_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert [s.name for s in datamodule.corpus().sources] == ["wikipedia", "books"]  # local files, not the fallback
    assert len(datamodule.validation_rows) > 200
    tokenizer = datamodule.tokenizer
    batches = list(itertools.islice(datamodule.train_dataloader(), 10))
    for batch in batches:
        assert batch["input_ids"].shape == (32, 128)
        assert int(batch["attention_mask"].sum()) == 32 * 128
        assert int((batch["labels"] != -100).sum()) == 605  # ceil(0.15 * 32 * 126)
    ids = np.concatenate([b["input_ids"].numpy().ravel() for b in batches])
    unk_fraction = (ids == tokenizer.unk_token_id).mean()
    assert 0 < unk_fraction < 0.03  # only WikiText's rare-word markers: the vocabulary matches the text
    masked_ids = np.concatenate([b["labels"].numpy().ravel() for b in batches])
    assert not (masked_ids == tokenizer.unk_token_id).any()  # [UNK] is special: never a masked-LM target
    text = tokenizer.decode(ids)
    assert "@ - @" in text  # WikiText markup: the Wikipedia source is in the mix
    assert "< unk >" not in text  # its <unk> markers became [UNK] instead of four maskable pieces
    assert "the" in text.split()


def unseen_text_data_config(shared_dir: Path, tokenizer: Path):
    overrides = ("data=unseen_text", f"paths.shared_dir={shared_dir}", "student_model=x", f"teacher_model={tokenizer}")
    return compose_config("evaluate", *overrides).data


@pytest.mark.shared
def test_unseen_text_validates_on_every_squad_dev_paragraph_and_conll_test_document(shared_dir):
    datamodule = instantiate(unseen_text_data_config(shared_dir, shared_dir / "models" / "bert-teacher-12x256"))
    corpus = datamodule.corpus()
    documents = list(corpus.validation_documents())
    assert len(documents) == 2067 + 231  # SQuAD v1.1 dev paragraphs + CoNLL-2003 eng.testb documents (NOTES.md)
    assert sum(d.startswith("Super Bowl 50 was an American football game") for d in documents) == 1
    assert sum(d.startswith("SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .\n") for d in documents) == 1
    assert sum(len(d.split()) for d in documents if "\n" in d) >= 46_435 - 2067  # CoNLL's words, a space apart
    assert [s.name for s in corpus.sources] == ["wikipedia", "books"] and corpus.val_documents == 100  # demo training


def test_unseen_text_without_the_shared_files_names_the_missing_file(tmp_path, tiny_teacher_dir):
    missing = rf"data.validation_sources: source squad_dev paths: no file matches '{tmp_path}/data/qa/squad-v1.1/dev"
    with pytest.raises(InstantiationException, match=missing):  # Hydra wraps the constructor's error
        instantiate(unseen_text_data_config(tmp_path, tiny_teacher_dir))


@pytest.mark.shared
@pytest.mark.slow
def test_prepare_the_shared_corpus_into_uint16_shards_with_token_counts(shared_dir, tmp_path):
    cfg = demo_data_config(shared_dir)
    sources = [instantiate(node) for node in cfg.data.sources]
    result = prepare(cfg.data.tokenizer, sources, [], str(tmp_path), val_documents=100, seed=0, num_proc=2)
    metadata = read_metadata(tmp_path)
    assert metadata["dtype"] == "uint16" and metadata["vocab_size"] == 30522
    assert metadata["splits"]["validation"]["documents"] == 200
    assert metadata["splits"]["train"]["tokens"] > 1_000_000
    assert np.load(tmp_path / "token_counts.npy").sum() == metadata["splits"]["train"]["tokens"]
    assert result["splits"] == metadata["splits"]
