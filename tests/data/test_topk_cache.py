"""`distil.cache_teacher`'s cache: written values equal the teacher's, masks per row, the fingerprint refuses a cache of
anything else, a damaged file is named, an interrupted write continues to the same cache."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM

from distil.data.datamodule import CorpusDataModule
from distil.data.masking import MaskingCollator
from distil.data.packing import RowFormat
from distil.data.shard_rows import ShardRows
from distil.data.shards import read_metadata
from distil.data.sources import LocalFiles
from distil.data.tokenization import load_tokenizer
from distil.topk_cache.fingerprint import check_fingerprint, run_fingerprint
from distil.topk_cache.store import TeacherCache
from distil.topk_cache.stream import row_batch
from distil.topk_cache.writer import cache_teacher
from tests.conftest import copy_with_a_flipped_byte

LENGTH = 16
SETTINGS = dict(max_length=LENGTH, seed=7, mlm_probability=0.15, mlm_smoothing=None, temperature=2.0)


@pytest.fixture(scope="module")
def cache_dir(tiny_shards_dir, tiny_teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("caches") / "k5"
    cache_teacher(
        str(tiny_shards_dir), str(tiny_teacher_dir), str(out), topk=5, maskings=2, kl_positions="masked",
        precision="float32", batch_size=16, **SETTINGS,
    )  # fmt: skip
    return out


def rows_and_collator(tiny_shards_dir, teacher_dir):
    tokenizer = load_tokenizer(str(teacher_dir))
    metadata = read_metadata(tiny_shards_dir)
    rows = ShardRows(str(tiny_shards_dir), metadata, LENGTH, RowFormat.of(tokenizer, False), shuffle=False, seed=0)
    return rows, MaskingCollator.from_tokenizer(tokenizer, LENGTH, mlm_probability=0.15)


def test_written_values_equal_the_teachers(cache_dir, tiny_shards_dir, tiny_teacher_dir):
    cache = TeacherCache(cache_dir, verify=True)
    arrays, shape = cache.arrays(), cache.shape
    rows, collator = rows_and_collator(tiny_shards_dir, tiny_teacher_dir)
    assert shape.maskings == 2 and shape.k == 5 and shape.mask_slots == shape.positions == math.ceil(0.15 * 14)
    assert shape.rows == rows.num_rows > 40
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir).eval()
    for r in (0, 17, shape.rows - 1):
        for m in range(2):
            batch = row_batch(collator, rows.read_rows(np.array([r]))[0], 7, r, m)
            masked = torch.nonzero(batch["labels"][0] != -100).squeeze(1)
            assert len(masked) == shape.mask_slots  # a full row masks exactly ceil(15% x 14) positions
            assert arrays["masked_positions"][m, r].tolist() == masked.tolist()
            assert arrays["masked_ids"][m, r].tolist() == batch["input_ids"][0, masked].tolist()
            with torch.no_grad():
                logits = teacher(input_ids=batch["input_ids"]).logits[0, masked]
            log_probs = torch.log_softmax(logits / 2.0, dim=-1)
            values, ids = log_probs.topk(5, dim=-1)
            assert arrays["topk_ids"][m, r].tolist() == ids.tolist()
            assert np.allclose(arrays["topk_log_probs"][m, r], values.numpy(), atol=1e-5)
            tail = np.log1p(-np.exp(values.numpy().astype(np.float64)).sum(-1))
            assert np.allclose(arrays["tail_log_prob"][m, r], tail, atol=1e-4)
    first, second = arrays["masked_positions"][0], arrays["masked_positions"][1]
    assert (first != second).any(axis=1).mean() > 0.5  # two maskings differ on most rows


def test_the_top_k_mass_is_the_teachers_probability_on_its_top_k_ids_over_the_cached_positions(
    cache_dir, tiny_shards_dir, tiny_teacher_dir
):
    cache = TeacherCache(cache_dir)
    rows, collator = rows_and_collator(tiny_shards_dir, tiny_teacher_dir)
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir).eval()
    masses = []
    for r in range(cache.shape.rows):
        for m in range(2):
            batch = row_batch(collator, rows.read_rows(np.array([r]))[0], 7, r, m)
            with torch.no_grad():
                logits = teacher(input_ids=batch["input_ids"]).logits[0, batch["labels"][0] != -100]
            masses.append(torch.softmax(logits / 2.0, dim=-1).topk(5, dim=-1).values.sum(-1))
    expected = torch.cat(masses).double().mean().item()
    assert 0.05 < expected < 0.95  # neither end: a wrong position set would show
    assert cache.top_k_mass() == pytest.approx(expected, abs=1e-5)


def test_a_cache_of_other_settings_is_refused_naming_each_difference(cache_dir, tiny_shards_dir, tiny_teacher_dir):
    cache = TeacherCache(cache_dir)
    metadata = read_metadata(tiny_shards_dir)
    same = run_fingerprint(str(tiny_teacher_dir), metadata, kl_positions="masked", **SETTINGS)
    check_fingerprint(cache.fingerprint, same, cache_dir)  # this run's own cache: accepted
    other = run_fingerprint(
        str(tiny_teacher_dir), metadata, kl_positions="masked", **(SETTINGS | {"temperature": 4.0, "seed": 8})
    )
    with pytest.raises(ValueError, match=r"seed: cache '7', this run '8'; temperature: cache '2.0', this run '4.0'"):
        check_fingerprint(cache.fingerprint, other, cache_dir)


def test_another_teacher_is_refused(cache_dir, tiny_shards_dir, tiny_teacher_dir, tmp_path):
    changed = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, changed)
    model = AutoModelForMaskedLM.from_pretrained(changed)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.bias.add_(0.01)  # fine-tuned: same shapes, other weights
    model.save_pretrained(changed)
    other = run_fingerprint(str(changed), read_metadata(tiny_shards_dir), kl_positions="masked", **SETTINGS)
    with pytest.raises(ValueError, match=r"teacher: cache '[0-9a-f]{64}', this run '[0-9a-f]{64}'") as error:
        check_fingerprint(TeacherCache(cache_dir).fingerprint, other, cache_dir)
    assert "tokenizer:" not in str(error.value) and "shards:" not in str(error.value)


def test_a_damaged_file_is_named(cache_dir, tmp_path):
    damaged = tmp_path / "damaged"
    copy_with_a_flipped_byte(cache_dir, damaged, "topk_log_probs.bin", 100)
    TeacherCache(damaged, verify=False)  # sizes agree: only the sha256 finds it
    with pytest.raises(ValueError, match=r"topk_log_probs\.bin does not match the sha256"):
        TeacherCache(damaged, verify="auto")
    with open(damaged / "tail_log_prob.bin", "r+b") as file:
        file.truncate(64)
    with pytest.raises(ValueError, match=r"tail_log_prob\.bin has 64 bytes but metadata\.json records"):
        TeacherCache(damaged, verify=False)


def test_an_interrupted_write_continues_to_the_same_cache(cache_dir, tiny_shards_dir, tiny_teacher_dir, tmp_path):
    out = tmp_path / "resumed"
    arguments = dict(topk=5, maskings=2, kl_positions="masked", precision="float32", batch_size=16, **SETTINGS)
    stopped = cache_teacher(str(tiny_shards_dir), str(tiny_teacher_dir), str(out), stop_after_batches=2, **arguments)
    assert stopped is None and not out.exists()
    done = np.fromfile(tmp_path / ".resumed.partial" / "done.bin", dtype=np.uint8)
    assert done.tolist() == [1, 1] + [0] * (len(done) - 2)
    metadata = cache_teacher(str(tiny_shards_dir), str(tiny_teacher_dir), str(out), **arguments)
    assert metadata["files"] == json.loads((cache_dir / "metadata.json").read_text())["files"]
    assert not (tmp_path / ".resumed.partial").exists()


def test_two_writing_processes_with_a_worker_each_write_the_same_cache(
    cache_dir, tiny_shards_dir, tiny_teacher_dir, tmp_path
):
    arguments = dict(topk=5, maskings=2, kl_positions="masked", precision="float32", batch_size=16, **SETTINGS)
    out = str(tmp_path / "split")
    metadata = cache_teacher(str(tiny_shards_dir), str(tiny_teacher_dir), out, devices=2, num_workers=1, **arguments)
    assert metadata["files"] == json.loads((cache_dir / "metadata.json").read_text())["files"]


def test_bad_settings_are_refused_before_any_work(tiny_shards_dir, tiny_teacher_dir, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"topk=129 is not allowed: at most the teacher's vocabulary, 128 ids"):
        cache_teacher(str(tiny_shards_dir), str(tiny_teacher_dir), str(out), topk=129)
    with pytest.raises(ValueError, match=r"precision='bfloat16' is not allowed"):
        cache_teacher(str(tiny_shards_dir), str(tiny_teacher_dir), str(out), precision="bfloat16")
    assert not out.exists()


def test_a_cache_needs_shards(tiny_teacher_dir, tiny_corpus_dir, cache_dir):
    with pytest.raises(ValueError, match=r"distill.teacher_cache='.*' needs data=shards"):
        CorpusDataModule(
            str(tiny_teacher_dir), sources=[LocalFiles(str(tiny_corpus_dir / "*.txt"))], teacher_cache=str(cache_dir)
        )
