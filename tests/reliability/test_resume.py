"""resume=auto picks the newest good checkpoint and skips damaged ones; ckpt_path is checked before weights load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distil.checkpoint_io import CheckpointError, atomic_torch_save
from distil.resume import find_resume_checkpoint, resolve_ckpt_path, run_checkpoint_dir
from tests.reliability.test_checkpoint_io import corrupt, lightning_like


def write_run(directory: Path, steps: dict[str, int]) -> Path:
    for offset, (name, step) in enumerate(steps.items()):
        atomic_torch_save(lightning_like(step), directory / name)
        os.utime(directory / name, (1_000_000 + offset, 1_000_000 + offset))  # written in this order
    return directory


def test_newest_step_wins_and_last_ckpt_wins_a_tie(tmp_path):
    write_run(tmp_path, {"step0000004.ckpt": 4, "step0000008.ckpt": 8, "last.ckpt": 8, "step0000002.ckpt": 2})
    assert find_resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"


def test_a_newer_preemption_checkpoint_wins(tmp_path):
    write_run(tmp_path, {"step0000008.ckpt": 8, "last.ckpt": 8, "preempted.ckpt": 11})
    assert find_resume_checkpoint(tmp_path) == tmp_path / "preempted.ckpt"


def test_damaged_newest_checkpoints_fall_back_to_the_previous_good_one(tmp_path, caplog):
    write_run(tmp_path, {"step0000004.ckpt": 4, "step0000008.ckpt": 8, "last.ckpt": 8, "preempted.ckpt": 9})
    corrupt(tmp_path / "preempted.ckpt", "truncated")
    corrupt(tmp_path / "last.ckpt", "flipped byte")
    assert find_resume_checkpoint(tmp_path) == tmp_path / "step0000008.ckpt"
    skipped = [r.getMessage() for r in caplog.records if "resume=auto skips" in r.getMessage()]
    assert len(skipped) == 2 and any("preempted.ckpt" in m for m in skipped) and any("last.ckpt" in m for m in skipped)


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    assert find_resume_checkpoint(tmp_path / "not_created_yet") is None
    assert resolve_ckpt_path(None, "auto", tmp_path) is None


def test_resolve_keeps_an_explicit_path_and_lightning_keywords(tmp_path):
    write_run(tmp_path, {"x.ckpt": 3})
    assert resolve_ckpt_path(str(tmp_path / "x.ckpt"), None, tmp_path / "other") == str(tmp_path / "x.ckpt")
    assert resolve_ckpt_path("best", None, tmp_path) == "best"
    assert resolve_ckpt_path(None, None, tmp_path) is None


def test_ckpt_path_last_is_the_newest_good_checkpoint_and_fails_when_there_is_none(tmp_path):
    write_run(tmp_path, {"step0000004.ckpt": 4, "last.ckpt": 8, "preempted.ckpt": 10})
    corrupt(tmp_path / "preempted.ckpt", "truncated")
    assert resolve_ckpt_path("last", None, tmp_path) == str(tmp_path / "last.ckpt")
    with pytest.raises(
        FileNotFoundError, match=f"ckpt_path=last: no usable checkpoint in {tmp_path / 'new'}.*hydra.run.dir"
    ):
        resolve_ckpt_path("last", None, tmp_path / "new")


def test_a_bad_explicit_ckpt_path_fails_naming_the_key_and_the_file(tmp_path):
    write_run(tmp_path, {"x.ckpt": 3})
    corrupt(tmp_path / "x.ckpt", "truncated")
    with pytest.raises(CheckpointError, match=f"ckpt_path='{tmp_path / 'x.ckpt'}'.*truncated"):
        resolve_ckpt_path(str(tmp_path / "x.ckpt"), None, tmp_path)
    with pytest.raises(FileNotFoundError, match="ckpt_path='.*missing.ckpt'.*does not exist"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), None, tmp_path)


def test_bad_resume_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="resume='always' is not allowed"):
        resolve_ckpt_path(None, "always", tmp_path)
    with pytest.raises(ValueError, match="resume=auto and ckpt_path='x.ckpt' are both set"):
        resolve_ckpt_path("x.ckpt", "auto", tmp_path)


def test_checkpoint_dir_follows_the_model_checkpoint_callback():
    cfg = OmegaConf.create({"paths": {"output_dir": "/runs/a"}, "callbacks": {"model_checkpoint": {"dirpath": "/c"}}})
    assert run_checkpoint_dir(cfg) == Path("/c")
    assert run_checkpoint_dir(OmegaConf.create({"paths": {"output_dir": "/runs/a"}, "callbacks": {}})) == Path(
        "/runs/a/checkpoints"
    )
