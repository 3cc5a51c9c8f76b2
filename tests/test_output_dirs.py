"""Output folders are written whole through a staging folder and never replace a folder distil did not write."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from distil.run.folder_lock import FolderInUseError, FolderLock
from distil.run.output_dirs import MARKER_FILE, replace_output_dir
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]  # no staging or old folder left


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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_staging_folders_of_a_killed_write_are_removed_at_the_next_write(tmp_path):
    leftover = tmp_path / ".out.k1ll3d.tmp"
    leftover.mkdir()
    (leftover / "weights").write_text("half")
    replace_output_dir(tmp_path / "out", "hf_model", write_files(weights="new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_a_second_writer_of_a_folder_is_refused_naming_the_first_and_touches_nothing(tmp_path):
    target, staging = tmp_path / "out", tmp_path / ".out.first.tmp"  # the first writer's staging folder, half full
    staging.mkdir()
    (staging / "shard").write_text("half")
    with FolderLock(tmp_path / ".out.lock", target, "output_dir"):
        with pytest.raises(FolderInUseError, match=f"output_dir='{target}' is in use by pid {os.getpid()} on "):
            replace_output_dir(target, "token_shards", write_files(shard="second"), key="output_dir")
        assert (staging / "shard").read_text() == "half" and not target.exists()
    replace_output_dir(target, "token_shards", write_files(shard="later"), key="output_dir")  # released
    assert (target / "shard").read_text() == "later"


def test_a_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_LOCK, str(tmp_path / ".out.lock")], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FolderInUseError, match=f"is in use by pid {holder.pid} on "):
        FolderLock(tmp_path / ".out.lock", tmp_path / "out", "out").__enter__()
    holder.kill()
    holder.wait()
    with FolderLock(tmp_path / ".out.lock", tmp_path / "out", "out"):
        pass


HOLD_A_LOCK = """
import sys, time
from distil.run.folder_lock import FolderLock
with FolderLock(sys.argv[1], "out", "out"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_an_output_folder_and_its_files_get_the_permissions_of_the_umask(tmp_path):
    def owner_only(directory):  # as tempfile's staging folder and safetensors' files are made
        (directory / "weights").write_text("w")
        (directory / "weights").chmod(0o600)
        (directory / "onnx").mkdir(mode=0o700)

    previous = os.umask(0o022)
    try:
        replace_output_dir(tmp_path / "out", "hf_model", owner_only)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "out", *(tmp_path / "out").iterdir()]}
    assert modes == {"out": 0o755, "weights": 0o644, "onnx": 0o755, MARKER_FILE: 0o644}
