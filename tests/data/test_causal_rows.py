"""Causal rows: documents joined by the tokenizer's end-of-text, cut into full unframed rows, no masking, next-token
labels; the same rows from text and from shards, split exactly over 2 ranks x 2 workers; shards prepared for the
other kind of model are refused."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from distil.data.batch_stream import BatchStream
from distil.data.datamodule import CorpusDataModule
from distil.data.packing import concatenate_documents
from distil.data.shards import check_row_kind, read_metadata
from distil.data.sources import LocalFiles
from distil.prepare import prepare

ROW = 24


def causal_datamodule(tokenizer_dir, **data) -> CorpusDataModule:
    return CorpusDataModule(str(tokenizer_dir), causal=True, **(dict(max_length=ROW, batch_size=4, seed=3) | data))


@pytest.fixture(scope="module")
def causal_shards(causal_tokenizer_dir, corpus_dir, tmp_path_factory):
    """Causal shards of the test corpus, 700 tokens per shard so rows cross shard borders."""
    output = tmp_path_factory.mktemp("causal_shards")
    sources = [LocalFiles(str(corpus_dir / "*.txt"))]
    prepare(str(causal_tokenizer_dir), sources, [], str(output), 10, 3, 2, 16, shard_tokens=700, causal=True)
    return output


def test_rows_are_the_end_of_text_joined_stream_and_labels_the_next_tokens(causal_tokenizer_dir, corpus_dir):
    datamodule = causal_datamodule(
        causal_tokenizer_dir,
        sources=[LocalFiles(str(corpus_dir / "part-b.txt"))],
        val_documents=0,
        documents_per_block=1000,
    )
    tokenizer = AutoTokenizer.from_pretrained(causal_tokenizer_dir)
    documents = (corpus_dir / "part-b.txt").read_text().strip().split("\n\n")
    stream = concatenate_documents([tokenizer.encode(d) for d in documents], tokenizer.eos_token_id)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].tolist() == stream[: 4 * ROW].reshape(4, ROW).tolist()  # no framing, no masking
    assert batch["attention_mask"].all()
    assert batch["labels"][:, :-1].tolist() == batch["input_ids"][:, 1:].tolist()
    assert (batch["labels"][:, -1] == -100).all()  # the last position of a row has no next token in the row
    assert tokenizer.eos_token_id in batch["input_ids"]


def test_shards_hold_the_text_rows_stream(causal_shards, causal_tokenizer_dir, corpus_dir):
    metadata = json.loads((causal_shards / "metadata.json").read_text())
    assert metadata["causal"] is True and metadata["separator_id"] == 0
    from_text = causal_datamodule(
        causal_tokenizer_dir,
        sources=[LocalFiles(str(corpus_dir / "*.txt"))],
        val_documents=10,
        documents_per_block=10**6,
    )
    from_shards = causal_datamodule(causal_tokenizer_dir, shards_dir=str(causal_shards), shuffle=False)
    text_rows = [row.tolist() for row, _ in itertools.islice(from_text.train_dataset().rows.rows(0, 1), 20)]
    shard_rows = [row.tolist() for row, _ in itertools.islice(from_shards.train_dataset().rows.rows(0, 1), 20)]
    assert shard_rows == text_rows
    from_text.setup("fit")
    from_shards.setup("fit")
    assert np.array_equal(from_text.validation_rows, from_shards.validation_rows)


@pytest.mark.parametrize("kind", ["text", "shards"])
def test_two_ranks_by_two_workers_read_exactly_the_single_process_stream(
    kind, causal_shards, causal_tokenizer_dir, corpus_dir
):
    data = (
        dict(sources=[LocalFiles(str(corpus_dir / "*.txt"))], val_documents=10, documents_per_block=20)
        if kind == "text"
        else dict(shards_dir=str(causal_shards))
    )
    datamodule = causal_datamodule(causal_tokenizer_dir, batch_size=1, **data)
    rows = datamodule.train_dataset().rows
    reference = (
        [row.tolist() for row, _ in rows.pass_rows(0, slot=0, num_slots=1, start=(0, 0, 0))]
        if kind == "text"
        else [row.tolist() for row, _ in itertools.islice(rows.rows(0, 1), rows.num_rows)]
    )
    assert len(reference) > 50
    seen = []
    for rank in range(2):
        stream = BatchStream(rows, datamodule.collator, 1, seed=3, rank=rank, world_size=2)
        for batch, position in itertools.islice(DataLoader(stream, batch_size=None, num_workers=2), len(reference)):
            if position[1] == 0:  # the first pass
                seen.append(batch["input_ids"][0].tolist())
    assert sorted(seen) == sorted(reference)


def test_shards_of_the_other_kind_of_model_are_refused(causal_shards):
    metadata = read_metadata(causal_shards)
    check_row_kind(metadata, True, causal_shards)
    with pytest.raises(ValueError, match=r"prepared for a causal LM .* this run trains a masked LM"):
        check_row_kind(metadata, False, causal_shards)
    del metadata["causal"]  # shards written before causal LMs: masked
    with pytest.raises(ValueError, match=r"prepared for a masked LM .* this run trains a causal LM"):
        check_row_kind(metadata, True, causal_shards)


def test_a_causal_tokenizer_without_end_of_text_is_refused(tmp_path, causal_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(causal_tokenizer_dir)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"data.tokenizer='.*': the tokenizer has no eos_token; a causal LM's"):
        causal_datamodule(tmp_path, sources=[LocalFiles(str(tmp_path / "*.json"))])
