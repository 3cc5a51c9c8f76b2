"""resume=auto picks the newest good checkpoint and skips damaged ones; ckpt_path is checked before weights load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distil.run.checkpoint_io import CheckpointError, atomic_torch_save, peek_checkpoint
from distil.run.resume import (
    check_resumed_student,
    find_resume_checkpoint,
    resolve_ckpt_path,
    run_checkpoint_dir,
    tidy_checkpoint_folder,
)
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
    assert resolve_ckpt_path(None, None, tmp_path / "fresh") is None


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


def test_a_launch_into_a_folder_holding_checkpoints_must_resume_from_one_of_them(tmp_path):
    run = write_run(tmp_path / "run", {"step0000008.ckpt": 8, "last.ckpt": 16})
    elsewhere = write_run(tmp_path / "other", {"x.ckpt": 3})
    message = f"the run folder {run} already holds checkpoints \\(last.ckpt, step0000008.ckpt\\).*resume=auto"
    with pytest.raises(FileExistsError, match=message):
        resolve_ckpt_path(None, None, run)
    with pytest.raises(FileExistsError, match=message):
        resolve_ckpt_path(str(elsewhere / "x.ckpt"), None, run)
    assert resolve_ckpt_path(str(run / "step0000008.ckpt"), None, run) == str(run / "step0000008.ckpt")
    assert resolve_ckpt_path(None, "auto", run) == str(run / "last.ckpt")
    assert resolve_ckpt_path(str(elsewhere / "x.ckpt"), None, tmp_path / "new") == str(elsewhere / "x.ckpt")


def test_resuming_an_older_checkpoint_sets_the_later_ones_aside_and_last_ckpt_becomes_it(tmp_path, caplog):
    write_run(tmp_path, {"step0000004.ckpt": 4, "step0000008.ckpt": 8, "last.ckpt": 8, "preempted.ckpt": 10})
    tidy_checkpoint_folder(tmp_path, str(tmp_path / "step0000004.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.ckpt",
        "last.ckpt.rewound",
        "preempted.ckpt.rewound",
        "step0000004.ckpt",
        "step0000008.ckpt.rewound",
    ]
    assert peek_checkpoint(tmp_path / "last.ckpt")["global_step"] == 4
    assert peek_checkpoint(tmp_path / "preempted.ckpt.rewound")["global_step"] == 10  # kept, not resumed from
    assert find_resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    assert "set aside 3 checkpoint(s) of later steps" in caplog.text


def test_resuming_a_newer_preemption_checkpoint_makes_last_ckpt_a_copy_of_it(tmp_path):
    write_run(tmp_path, {"step0000008.ckpt": 8, "last.ckpt": 8, "preempted.ckpt": 11})
    tidy_checkpoint_folder(tmp_path, str(tmp_path / "preempted.ckpt"))
    assert (tmp_path / "last.ckpt").read_bytes() == (tmp_path / "preempted.ckpt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "preempted.ckpt", "step0000008.ckpt"]


def test_temp_files_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    write_run(tmp_path, {"last.ckpt": 8})
    (tmp_path / ".last.ckpt.4242.tmp").write_bytes(b"PK half a checkpoint")
    (tmp_path / ".notes").write_text("not ours")
    tidy_checkpoint_folder(tmp_path, str(tmp_path / "last.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes", "last.ckpt"]


def test_a_checkpoint_of_another_student_is_named_with_the_differing_settings(tmp_path):
    path = tmp_path / "last.ckpt"
    stored = {"model_type": "distilbert", "n_layers": 4, "dim": 32, "transformers_version": "5.0.0"}
    atomic_torch_save(
        {
            **lightning_like(8),
            "student_config": stored,
            "run_config": {"student": {"num_layers": 4, "init": "teacher"}},
        },
        path,
    )
    built = {"model_type": "distilbert", "n_layers": 2, "dim": 32, "transformers_version": "5.1.0"}
    with pytest.raises(
        ValueError,
        match=r"checkpoint has student.num_layers=4, the config 2 \(student config n_layers: checkpoint 4, config 2\)",
    ):
        check_resumed_student(str(path), built, {"num_layers": 2, "init": "teacher"})
    check_resumed_student(str(path), {**built, "n_layers": 4}, {"num_layers": None, "init": "teacher"})  # same model
    check_resumed_student(None, built, {"num_layers": 2})
