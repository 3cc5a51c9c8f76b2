"""`distil.prepare` shards: exact token content, dtype from vocabulary size, counts, shard borders, shard loader
rows, sharding across (rank, worker) slots, and the tokenizer check."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from distil.data.batch_stream import BatchStream
from distil.data.corpus import Corpus
from distil.data.datamodule import CorpusDataModule
from distil.data.masking import IGNORE_INDEX
from distil.data.packing import RowFormat, concatenate_documents, pack_rows
from distil.data.shard_writer import ShardWriter
from distil.data.shards import read_metadata, token_dtype
from distil.data.sources import LocalFiles
from distil.data.throughput import measure_tokens_per_second
from distil.prepare import prepare
from distil.run.folder_lock import FolderInUseError, FolderLock
from distil.run.output_dirs import MARKER_FILE
from tests.conftest import copy_with_a_flipped_byte
from tests.data.conftest import WORDS, random_documents, write_text_file, write_tokenizer
from tests.reliability.runs import file_digests

ROW = 24


@pytest.fixture(scope="module")
def prepared(tokenizer_dir, corpus_dir, tmp_path_factory):
    """Shards of the test corpus, 700 tokens per shard so rows cross shard borders."""
    output = tmp_path_factory.mktemp("shards")
    sources = [LocalFiles(str(corpus_dir / "*.txt"))]
    prepare(
        str(tokenizer_dir),
        sources,
        [],
        str(output),
        val_documents=10,
        seed=3,
        num_proc=2,
        documents_per_chunk=16,
        shard_tokens=700,
    )
    return output


def expected_tokens(tokenizer_dir, documents) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return concatenate_documents(
        [tokenizer.encode(d, add_special_tokens=False) for d in documents], tokenizer.sep_token_id
    )


def read_split(directory, split: str) -> np.ndarray:
    metadata = read_metadata(directory)
    return np.concatenate(
        [np.fromfile(directory / name, dtype=metadata["dtype"]) for name in metadata["splits"][split]["shards"]]
    )


def test_prepare_writes_exactly_the_tokens_of_each_split_and_their_counts(prepared, tokenizer_dir, corpus_dir):
    corpus = Corpus([LocalFiles(str(corpus_dir / "*.txt"))], val_documents=10, seed=3)
    train = expected_tokens(tokenizer_dir, list(corpus.training_documents(0)))
    validation = expected_tokens(tokenizer_dir, list(corpus.validation_documents()))
    metadata = read_metadata(prepared)
    assert metadata["dtype"] == "uint16"
    assert metadata["splits"]["train"]["documents"] == 240 and metadata["splits"]["validation"]["documents"] == 10
    assert metadata["splits"]["train"]["tokens"] == len(train)
    assert len(metadata["splits"]["train"]["shards"]) == int(np.ceil(len(train) / 700))
    assert read_split(prepared, "train").tolist() == train.tolist()
    assert read_split(prepared, "validation").tolist() == validation.tolist()
    counts = np.load(prepared / "token_counts.npy")
    assert counts.tolist() == np.bincount(train, minlength=len(counts)).tolist()


def test_vocabularies_over_65536_ids_are_stored_as_uint32_without_truncation(tmp_path):
    assert token_dtype(30522) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(250_002) == np.uint32
    big_words = WORDS + [f"w{i}" for i in range(70_000)]
    tokenizer_dir = write_tokenizer(tmp_path / "big", words=big_words)
    write_text_file(tmp_path / "text.txt", ["the w69990 and w65600 .", "w0 w69999 king ."] * 3)
    prepare(
        str(tokenizer_dir),
        [LocalFiles(str(tmp_path / "text.txt"))],
        [],
        str(tmp_path / "out"),
        val_documents=1,
        seed=0,
        num_proc=1,
    )
    tokens = read_split(tmp_path / "out", "train")
    assert read_metadata(tmp_path / "out")["dtype"] == "uint32"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert int(tokens.max()) == tokenizer.convert_tokens_to_ids("w69999") > 65535
    assert (
        tokens.tolist()
        == expected_tokens(
            tokenizer_dir, ["w0 w69999 king .", "the w69990 and w65600 ."] * 2 + ["w0 w69999 king ."]
        ).tolist()
    )


def test_shard_writer_refuses_tokens_of_another_dtype(tmp_path):
    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint16), 10)
    with pytest.raises(TypeError, match="uint32"):
        writer.write(np.arange(5, dtype=np.uint32), 1)


def shard_datamodule(tokenizer_dir, prepared, **kwargs) -> CorpusDataModule:
    arguments = dict(max_length=ROW, batch_size=4, seed=3, shuffle=False)
    arguments.update(kwargs)
    return CorpusDataModule(str(tokenizer_dir), shards_dir=str(prepared), **arguments)


def original_ids(batch) -> torch.Tensor:
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])


def test_shard_loader_rows_are_the_packed_training_stream_across_shard_borders(prepared, tokenizer_dir):
    datamodule = shard_datamodule(tokenizer_dir, prepared)
    tokens = read_split(prepared, "train").astype(np.int64)
    tokenizer = datamodule.tokenizer
    expected = pack_rows(tokens, ROW, RowFormat.of(tokenizer, causal=False))
    batches = list(itertools.islice(datamodule.train_dataloader(), len(expected) // 4))
    produced = torch.cat([original_ids(b) for b in batches])
    assert produced.tolist() == expected[: len(produced)].tolist()
    datamodule.setup("fit")
    validation = read_split(prepared, "validation").astype(np.int64)
    assert (
        datamodule.validation_rows.tolist()
        == pack_rows(validation, ROW, RowFormat.of(tokenizer, causal=False)).tolist()
    )


def test_shuffled_passes_visit_every_row_once_in_a_new_order(prepared, tokenizer_dir):
    rows = shard_datamodule(tokenizer_dir, prepared, shuffle=True).train_dataset().rows
    first = [(tuple(row), position) for row, position in itertools.islice(rows.rows(0, 1), 2 * rows.num_rows)]
    pass0 = [row for row, position in first if position[0] == 0]
    pass1 = [row for row, position in first if position[0] == 1]
    in_order = [tuple(row) for row in rows.read_rows(np.arange(rows.num_rows))]
    assert len(pass0) == len(pass1) == rows.num_rows
    assert sorted(pass0) == sorted(pass1) == sorted(in_order)
    assert pass0 != pass1 and pass0 != in_order


def test_two_ranks_by_two_workers_read_exactly_the_single_process_shard_stream(prepared, tokenizer_dir):
    datamodule = shard_datamodule(tokenizer_dir, prepared, shuffle=True, batch_size=1)
    rows = datamodule.train_dataset().rows
    reference = [tuple(row) for row, position in itertools.islice(rows.rows(0, 1), rows.num_rows)]
    seen = []
    for rank in range(2):
        stream = BatchStream(rows, datamodule.collator, 1, seed=3, rank=rank, world_size=2)
        for batch, position in itertools.islice(
            DataLoader(stream, batch_size=None, num_workers=2), rows.num_rows // 2 + 2
        ):
            if position[1] == 0:
                seen.append(tuple(original_ids(batch)[0].tolist()))
    assert len(seen) == len(reference) == len(set(reference))
    assert sorted(seen) == sorted(reference)


def test_shards_of_another_vocabulary_are_refused(prepared, tmp_path):
    other = write_tokenizer(tmp_path / "other", words=list(reversed(WORDS)))
    with pytest.raises(ValueError, match=r"whose vocabulary differs from data.tokenizer="):
        CorpusDataModule(str(other), shards_dir=str(prepared))
    with pytest.raises(FileNotFoundError, match="python -m distil.prepare"):
        CorpusDataModule(str(other), shards_dir=str(tmp_path))


def test_smoothing_reads_the_token_counts_of_the_shards(prepared, tokenizer_dir):
    datamodule = shard_datamodule(tokenizer_dir, prepared, mlm_smoothing=0.7)
    counts = np.load(prepared / "token_counts.npy")
    expected = np.maximum(counts, 1.0) ** -0.7
    assert np.allclose(datamodule.collator.token_weights.numpy(), expected)


def test_loader_throughput_is_reported_in_tokens_per_second(prepared, tokenizer_dir):
    loader = shard_datamodule(tokenizer_dir, prepared, batch_size=8).train_dataloader()
    assert measure_tokens_per_second(loader, batches=20) > 10_000


def test_metadata_records_the_size_and_sha256_of_every_shard(prepared):
    metadata = read_metadata(prepared)
    for split in ("train", "validation"):
        entry = metadata["splits"][split]
        files = [prepared / name for name in entry["shards"]]
        assert entry["shard_bytes"] == [path.stat().st_size for path in files]
        assert entry["shard_sha256"] == [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]
    assert len(metadata["splits"]["train"]["shards"]) > 2  # so the test below damages a middle shard
    assert json.loads((prepared / MARKER_FILE).read_text())["kind"] == "token_shards"


def test_a_truncated_middle_shard_is_named_when_the_loader_starts(prepared, tokenizer_dir, tmp_path):
    damaged = tmp_path / "shards"
    shutil.copytree(prepared, damaged)
    middle = damaged / "train-00001.bin"
    middle.write_bytes(middle.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"shard {middle} has 1300 bytes but metadata.json records 1400"):
        shard_datamodule(tokenizer_dir, damaged)


def test_verify_shards_finds_a_changed_byte_that_keeps_the_size(prepared, tokenizer_dir, tmp_path):
    damaged = tmp_path / "shards"
    middle = copy_with_a_flipped_byte(prepared, damaged, "train-00001.bin", 10)
    shard_datamodule(tokenizer_dir, damaged, verify_shards=False)  # sizes match: only the sha256 can see it
    for verify in (True, "auto"):  # auto: shards of at most 512 MiB in all are verified at start (these: a few KB)
        with pytest.raises(ValueError, match=rf"shard {middle} does not match the sha256 that metadata.json records"):
            shard_datamodule(tokenizer_dir, damaged, verify_shards=verify)


def test_verify_shards_auto_verifies_up_to_its_limit_and_names_bad_values(prepared, tokenizer_dir, monkeypatch, caplog):
    from distil.data import shards

    metadata = shards.read_metadata(prepared)
    total = sum(sum(metadata["splits"][split]["shard_bytes"]) for split in shards.SPLITS)
    assert shards.verify_at_start("auto", metadata) and not shards.verify_at_start(False, metadata)
    monkeypatch.setattr(shards, "VERIFY_AUTO_BYTES", total - 1)
    with caplog.at_level(logging.INFO):
        assert not shards.verify_at_start("auto", metadata) and shards.verify_at_start(True, metadata)
    assert f"verify_shards=auto: the shards hold {total} bytes" in caplog.text
    with pytest.raises(ValueError, match="data.verify_shards='yes' is not allowed: use true, false or auto"):
        shards.verify_at_start("yes", metadata)


class FailingSource:
    """A source whose documents stop with an error partway, like a prepare run killed midway."""

    name, weight = "failing", 1.0

    def __init__(self, documents: list[str]) -> None:
        self.texts = documents

    def check(self) -> None:
        pass

    def documents(self):
        yield from self.texts
        raise RuntimeError("the machine went away")


def test_an_interrupted_prepare_leaves_the_earlier_shards_as_they_were(prepared, tokenizer_dir, tmp_path):
    output = tmp_path / "shards"
    shutil.copytree(prepared, output)
    before = file_digests(output)
    with pytest.raises(RuntimeError, match="the machine went away"):
        prepare(
            str(tokenizer_dir),
            [FailingSource(random_documents(40, seed=5))],
            [],
            str(output),
            val_documents=2,
            seed=0,
            num_proc=1,
            documents_per_chunk=8,
        )
    assert file_digests(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shards.lock", "shards"]


def test_a_second_prepare_into_a_folder_being_written_is_refused_and_the_first_staging_stays(
    tokenizer_dir, corpus_dir, tmp_path
):
    output, staging = tmp_path / "shards", tmp_path / ".shards.first.tmp"  # the first prepare's staging folder
    staging.mkdir()
    (staging / "train-00000.bin").write_bytes(b"half")
    with FolderLock(tmp_path / ".shards.lock", output, "output_dir"):
        with pytest.raises(FolderInUseError, match=f"output_dir='{output}' is in use by pid {os.getpid()} on "):
            prepare(str(tokenizer_dir), [LocalFiles(str(corpus_dir / "*.txt"))], [], str(output), 10, 0, 1)
    assert (staging / "train-00000.bin").read_bytes() == b"half" and not output.exists()


def test_prepare_refuses_a_folder_that_holds_something_else(tokenizer_dir, corpus_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("not shards")
    with pytest.raises(FileExistsError, match=f"output_dir='{tmp_path}' holds notes.txt and is not a token_shards"):
        prepare(str(tokenizer_dir), [LocalFiles(str(corpus_dir / "*.txt"))], [], str(tmp_path), 10, 0, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
