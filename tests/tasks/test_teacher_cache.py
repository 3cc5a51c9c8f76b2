"""The teacher-output cache: a miss computes and stores, a hit reuses, and a change of any fingerprint field
(teacher weights, tokenizer, max length, data file) is a miss, never a stale hit."""

import copy
import stat
from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification

from distil.run.output_dirs import umask
from distil.tasks.batches import Collator
from distil.tasks.teacher_cache import fingerprint, run_teacher, teacher_outputs
from tests.conftest import tiny_config
from tests.tiny_assets import VOCAB_SIZE, tiny_tokenizer

SENTENCES = ["the king walked to the sea .", "a dark night", "she loved the old ship and the white whale ."]


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config("bert", 1, VOCAB_SIZE)).eval()


def features(tokenizer, max_length: int = 16) -> list[dict]:
    tokens = tokenizer(SENTENCES, truncation=True, max_length=max_length)
    return [{k: tokens[k][i] for k in tokens} for i in range(len(SENTENCES))]


def fields_of(teacher, tokenizer, max_length=16, data="sha256:aaa") -> dict[str, str]:
    return fingerprint(teacher, tokenizer, max_length, data, features(tokenizer, max_length), ("logits",))


class CountingTeacher:
    """`compute` for teacher_outputs: the teacher's real outputs, with a count of the calls."""

    def __init__(self, teacher, tokenizer):
        self.calls, self.teacher, self.tokenizer = 0, teacher, tokenizer

    def __call__(self):
        self.calls += 1
        collate = Collator(self.tokenizer.pad_token_id, "right", frozenset())
        return run_teacher(self.teacher, features(self.tokenizer), collate, 2, ("logits",), frozenset())


def test_miss_then_hit_gives_the_same_outputs(tmp_path):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    fields = fields_of(teacher, tokenizer)
    compute = CountingTeacher(teacher, tokenizer)
    first, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=3)
    assert report["cache"] == "miss" and compute.calls == 1 and len(list(tmp_path.glob("sst2-*.pt"))) == 1
    again, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=3)
    assert report["cache"] == "hit" and compute.calls == 1  # read back, not recomputed
    assert stat.S_IMODE(Path(report["file"]).stat().st_mode) == 0o666 & ~umask()  # not mkstemp's -rw-------
    for a, b in zip(first["logits"], again["logits"]):
        assert torch.equal(a, b)
    with torch.no_grad():  # the stored values are the teacher's own logits, feature by feature (unpadded batches)
        direct = [teacher(**{k: torch.tensor([v]) for k, v in f.items()}).logits[0] for f in features(tokenizer)]
    for stored, expected in zip(again["logits"], direct):
        assert torch.allclose(stored, expected, atol=1e-5)
    assert report["seconds_saved"] == pytest.approx(3 * report["compute_seconds"] - report["seconds"])


def test_without_a_cache_folder_outputs_are_computed_once_per_run_and_not_stored(tmp_path):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    compute = CountingTeacher(teacher, tokenizer)
    _, report = teacher_outputs(features(tokenizer), fields_of(teacher, tokenizer), compute, None, "sst2", epochs=2)
    assert (report["cache"], report["file"], compute.calls) == ("off", None, 1)


def changed_teacher():
    teacher = tiny_classifier()
    with torch.no_grad():
        teacher.classifier.bias.add_(1e-3)  # one weight differs slightly
    return teacher


@pytest.mark.parametrize(
    "field, change",
    [
        ("teacher", lambda t, k: fields_of(changed_teacher(), k)),
        ("tokenizer", lambda t, k: fields_of(t, tiny_tokenizer(vocab_size=VOCAB_SIZE + 1))),
        ("max_length", lambda t, k: fields_of(t, k, max_length=6)),
        ("data", lambda t, k: fields_of(t, k, data="sha256:bbb")),
    ],
)
def test_each_fingerprint_field_invalidates_the_cache(tmp_path, field, change):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    fields = fields_of(teacher, tokenizer)
    compute = CountingTeacher(teacher, tokenizer)
    teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    changed = change(teacher, tokenizer)
    assert changed[field] != fields[field]
    _, report = teacher_outputs(features(tokenizer), changed, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "miss" and compute.calls == 2
    _, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "hit" and compute.calls == 2  # the first fingerprint's file is still there, still valid


def test_a_file_with_another_fingerprint_or_feature_count_is_never_reused(tmp_path):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    fields = fields_of(teacher, tokenizer)
    compute = CountingTeacher(teacher, tokenizer)
    _, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    stored = torch.load(report["file"], weights_only=True)
    stale = copy.deepcopy(stored)
    stale["fingerprint"]["teacher"] = "0" * 64  # a file under this name that records another teacher
    torch.save(stale, report["file"])
    _, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "miss" and compute.calls == 2
    _, report = teacher_outputs(features(tokenizer)[:2], fields, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "miss" and compute.calls == 3  # 3 stored outputs for 2 features
    with open(report["file"], "wb") as f:
        f.write(b"not a torch file")
    _, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "miss" and compute.calls == 4


def test_tokenizer_fingerprint_ignores_call_time_truncation_settings():
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    before = fields_of(teacher, tokenizer)["tokenizer"]
    tokenizer(SENTENCES, truncation=True, max_length=4, padding="max_length")  # leaves settings on the backend
    assert fields_of(teacher, tokenizer)["tokenizer"] == before


def flip_stored_bytes(path, tensor: torch.Tensor) -> None:
    """Flip 4 bytes in the middle of where `tensor`'s bytes are stored in the file at `path`."""
    data, stored = bytearray(path.read_bytes()), tensor.numpy().tobytes()
    middle = data.index(stored) + len(stored) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


def test_a_damaged_cache_file_is_named_recomputed_and_replaced(tmp_path, caplog):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    fields = fields_of(teacher, tokenizer)
    compute = CountingTeacher(teacher, tokenizer)
    first, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    path = Path(report["file"])
    values = torch.load(path, weights_only=True)["outputs"]["logits"]["values"]
    flip_stored_bytes(path, values)
    damaged = torch.load(path, weights_only=True)["outputs"]["logits"]["values"]
    assert not torch.equal(damaged, values)  # torch.load alone reads the flipped values without complaint

    again, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)

    assert report["cache"] == "miss" and compute.calls == 2
    assert f"teacher cache {path} is damaged" in caplog.text and "recomputing" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(first["logits"], again["logits"]))
    _, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    assert report["cache"] == "hit" and compute.calls == 2  # the damaged file was replaced by a good one


def test_a_cache_file_holding_non_finite_values_is_recomputed(tmp_path, caplog):
    teacher, tokenizer = tiny_classifier(), tiny_tokenizer()
    fields = fields_of(teacher, tokenizer)
    compute = CountingTeacher(teacher, tokenizer)
    first, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)
    stored = torch.load(report["file"], weights_only=True)
    stored["outputs"]["logits"]["values"][1] = float("nan")
    torch.save(stored, report["file"])

    again, report = teacher_outputs(features(tokenizer), fields, compute, str(tmp_path), "sst2", epochs=1)

    assert report["cache"] == "miss" and compute.calls == 2 and "holds NaN or inf" in caplog.text
    assert all(torch.isfinite(t).all() for t in again["logits"])
