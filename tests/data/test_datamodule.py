"""CorpusDataModule over local .txt files: exact rows, document-level validation split, sharding across slots."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from distil.data.batch_stream import BatchStream
from distil.data.datamodule import CorpusDataModule
from distil.data.masking import IGNORE_INDEX
from distil.data.packing import RowFormat, concatenate_documents, pack_rows
from distil.data.sources import LocalFiles
from tests.data.conftest import random_documents, write_text_file

ROW = 24
BLOCK = 20


def make_datamodule(tokenizer_dir, corpus_dir, **kwargs) -> CorpusDataModule:
    arguments = dict(max_length=ROW, batch_size=4, val_documents=10, documents_per_block=BLOCK, seed=3)
    arguments.update(kwargs)
    return CorpusDataModule(str(tokenizer_dir), sources=[LocalFiles(str(corpus_dir / "*.txt"))], **arguments)


def original_ids(batch: dict) -> torch.Tensor:
    """The unmasked ids of a batch: labels where a position was chosen, input_ids elsewhere."""
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])


def expected_rows(tokenizer_dir, documents: list[str]) -> np.ndarray:
    """Rows built by hand: blocks of BLOCK documents, each packed on its own."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    blocks = []
    for start in range(0, len(documents), BLOCK):
        ids = [tokenizer.encode(d, add_special_tokens=False) for d in documents[start : start + BLOCK]]
        blocks.append(
            pack_rows(concatenate_documents(ids, tokenizer.sep_token_id), ROW, RowFormat.of(tokenizer, causal=False))
        )
    return np.concatenate(blocks)


def test_training_rows_are_the_packed_documents_after_the_held_out_ones(tokenizer_dir, tmp_path):
    documents = random_documents(120, seed=5)
    write_text_file(tmp_path / "only.txt", documents)
    datamodule = make_datamodule(tokenizer_dir, tmp_path)
    expected = expected_rows(tokenizer_dir, documents[10:])
    batches = itertools.islice(datamodule.train_dataloader(), len(expected) // 4)
    produced = torch.cat([original_ids(batch) for batch in batches])
    assert produced.tolist() == expected[: len(produced)].tolist()
    assert len(expected) - len(produced) < 4


def test_batches_have_the_agreed_keys_shapes_and_dtypes(tokenizer_dir, corpus_dir):
    datamodule = make_datamodule(tokenizer_dir, corpus_dir)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = list(itertools.islice(loader, 3))
    batch, val_batch = batches[0], next(iter(datamodule.val_dataloader()))
    for b in (batch, val_batch):
        assert sorted(b) == ["attention_mask", "input_ids", "labels"]
        assert all(t.shape == (4, ROW) and t.dtype == torch.int64 for t in b.values())
        assert int(b["attention_mask"].sum()) == 4 * ROW
        assert b["input_ids"][:, 0].eq(datamodule.tokenizer.cls_token_id).all()
        assert int((b["labels"] != IGNORE_INDEX).sum()) == int(np.ceil(0.15 * 4 * (ROW - 2)))
    # the stream positions wait beside the batches, in order, until the trainer uses them
    assert [loader.take_position() for _ in batches] == [(0, (0, 0, 4 * i)) for i in range(1, 4)]


def test_validation_is_held_out_by_document_and_masked_the_same_every_pass(tokenizer_dir, tmp_path):
    documents = random_documents(60, seed=6)
    write_text_file(tmp_path / "only.txt", documents)
    datamodule = make_datamodule(tokenizer_dir, tmp_path)
    datamodule.setup("fit")
    tokenizer = datamodule.tokenizer
    held_out = [tokenizer.encode(d, add_special_tokens=False) for d in documents[:10]]
    tokens = concatenate_documents(held_out, tokenizer.sep_token_id)
    assert datamodule.validation_rows.tolist() == pack_rows(tokens, ROW, RowFormat.of(tokenizer, causal=False)).tolist()
    first = list(datamodule.val_dataloader())
    second = list(datamodule.val_dataloader())
    assert len(first) == int(np.ceil(len(datamodule.validation_rows) / 4))
    for a, b in zip(first, second):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_two_ranks_by_two_workers_read_exactly_the_single_process_stream(tokenizer_dir, corpus_dir):
    """Union over (rank, worker) slots of one pass's rows == the single-slot pass: no duplicate, nothing missing."""
    single = make_datamodule(tokenizer_dir, corpus_dir)
    rows = single.train_dataset().rows
    reference = [row.tolist() for row, _ in rows.pass_rows(0, slot=0, num_slots=1, start=(0, 0, 0))]
    assert len(reference) > 100 and len(set(map(tuple, reference))) == len(reference)

    seen: dict[int, list] = {}
    for rank in range(2):
        datamodule = make_datamodule(tokenizer_dir, corpus_dir, batch_size=1)
        stream = BatchStream(rows, datamodule.collator, 1, seed=3, rank=rank, world_size=2)
        for batch, position in itertools.islice(DataLoader(stream, batch_size=None, num_workers=2), len(reference)):
            slot, pass_index = position[:2].tolist()
            if pass_index == 0:
                seen.setdefault(slot, []).append(original_ids(batch)[0].tolist())
    assert sorted(seen) == [0, 1, 2, 3]
    union = [row for slot_rows in seen.values() for row in slot_rows]
    assert len(union) == len(reference)
    assert sorted(union) == sorted(reference)
    by_block = [row for slot in range(4) for row in seen[slot]]  # each slot keeps its blocks' order
    assert all(row in reference for row in by_block)


def test_too_many_readers_for_the_text_is_a_clear_error(tokenizer_dir, tmp_path):
    write_text_file(tmp_path / "tiny.txt", random_documents(15, seed=1))
    datamodule = make_datamodule(tokenizer_dir, tmp_path, val_documents=0, documents_per_block=10)
    stream = BatchStream(datamodule.train_dataset().rows, datamodule.collator, 1, seed=0, rank=3, world_size=4)
    with pytest.raises(RuntimeError, match="reader slot 3 of 4"):
        next(iter(stream))


def test_missing_files_are_an_error_naming_the_pattern_when_the_data_module_is_built(tokenizer_dir, tmp_path):
    with pytest.raises(RuntimeError, match="nothing-"):
        CorpusDataModule(str(tokenizer_dir), sources=[LocalFiles(str(tmp_path / "nothing-*.txt"))])


def test_too_little_validation_text_is_an_error(tokenizer_dir, corpus_dir):
    datamodule = make_datamodule(tokenizer_dir, corpus_dir, val_documents=1, max_length=512)
    with pytest.raises(ValueError, match="val_documents=1"):
        datamodule.setup("fit")


def test_validation_sources_are_the_validation_rows_even_without_held_out_documents(tokenizer_dir, tmp_path):
    (tmp_path / "train").mkdir()
    write_text_file(tmp_path / "train" / "a.txt", random_documents(30, seed=1))
    unseen = random_documents(12, seed=2)
    write_text_file(tmp_path / "unseen.txt", unseen)
    validation_sources = [LocalFiles(str(tmp_path / "unseen.txt"), name="unseen")]
    datamodule = make_datamodule(
        tokenizer_dir, tmp_path / "train", val_documents=0, validation_sources=validation_sources
    )
    datamodule.setup("validate")
    tokenizer = datamodule.tokenizer
    tokens = concatenate_documents(
        [tokenizer.encode(d, add_special_tokens=False) for d in unseen], tokenizer.sep_token_id
    )
    expected = pack_rows(tokens, ROW, RowFormat.of(tokenizer, causal=False))
    assert datamodule.validation_rows.tolist() == expected.tolist() and len(expected) >= 3
    assert len(list(datamodule.val_dataloader())) == int(np.ceil(len(expected) / 4))
    with pytest.raises(RuntimeError, match=r"data.validation_sources: source absent paths: no file matches"):
        make_datamodule(tokenizer_dir, tmp_path / "train", validation_sources=[LocalFiles("/no/*.txt", name="absent")])
