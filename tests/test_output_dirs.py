"""Output folders are written whole through a staging folder and never replace a folder distil did not write."""

from __future__ import annotations

import json

import pytest

from distil.output_dirs import MARKER_FILE, replace_output_dir
from tests.reliability.runs import file_digests


def write_files(**files: str):
    def write(directory):
        for name, text in files.items():
            (directory / name).write_text(text)

    return write


def test_an_earlier_output_of_the_same_kind_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    replace_output_dir(target, "hf_model", write_files(**{"model.onnx": "old graph", "weights": "old"}))
    replace_output_dir(target, "hf_model", write_files(weights="new"), details={"checkpoint": "b.ckpt"})
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "weights"]  # no stale model.onnx
    assert (target / "weights").read_text() == "new"
    assert json.loads((target / MARKER_FILE).read_text()) == {"kind": "hf_model", "checkpoint": "b.ckpt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left


def test_a_folder_distil_did_not_write_is_refused_naming_what_it_holds_unless_overwrite(tmp_path):
    target = tmp_path / "teacher"
    target.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (target / name).write_text(name)
    before = file_digests(target)
    message = (
        f"out='{target}' holds config.json, model.safetensors, tokenizer.json and is not a hf_model folder written "
        "by distil.*overwrite=true"
    )
    with pytest.raises(FileExistsError, match=message):
        replace_output_dir(target, "hf_model", write_files(weights="new"))
    assert file_digests(target) == before
    replace_output_dir(target, "token_shards", write_files(shard="x"), overwrite=True)
    with pytest.raises(FileExistsError, match="is not a hf_model folder written by distil"):  # another kind
        replace_output_dir(target, "hf_model", write_files(weights="new"))
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        replace_output_dir(target / "shard", "token_shards", write_files(shard="x"))


def test_a_failing_write_leaves_the_previous_output_as_it_was(tmp_path):
    target = tmp_path / "out"
    replace_output_dir(target, "hf_model", write_files(weights="old"))
    before = file_digests(target)

    def half_then_fail(directory):
        (directory / "weights").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_output_dir(target, "hf_model", half_then_fail)
    assert file_digests(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staging_folders_of_a_killed_write_are_removed_at_the_next_write(tmp_path):
    leftover = tmp_path / ".out.k1ll3d.tmp"
    leftover.mkdir()
    (leftover / "weights").write_text("half")
    replace_output_dir(tmp_path / "out", "hf_model", write_files(weights="new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
