"""Exact resume on CPU in fp32: a run interrupted at step k and resumed logs bitwise the losses of the
uninterrupted run after k (student, AdamW moments, LR schedule, step counters, RNG states, data position).

Most runs here are MAX_STEPS=16 tiny steps (2-layer student, hidden 32, 4 x 32 tokens per batch, validation every 3
steps so that resuming also crosses validations); one run is the issue's 2000 steps resumed at step 1000.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from distil.resume import find_resume_checkpoint
from tests.reliability.runs import MAX_STEPS, run_in_dir, train_losses


def test_uninterrupted_run_logs_every_step(uninterrupted_run):
    losses = train_losses(uninterrupted_run)
    assert sorted(losses) == list(range(MAX_STEPS))
    assert all(torch.isfinite(torch.tensor(list(losses.values()))))


@pytest.mark.parametrize("resume", ["resume=auto", "ckpt_path=last"])
def test_resuming_the_run_dir_after_sigterm_continues_with_the_uninterrupted_losses(
    resume, preempted_run, uninterrupted_run, overrides, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(preempted_run.run_dir, run_dir)
    stopped_at = torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)["global_step"]

    result = run_in_dir(run_dir, [*overrides, resume])

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{resume}: resuming from {run_dir / 'checkpoints' / 'preempted.ckpt'}" in result.stdout + result.stderr
    expected, resumed = train_losses(uninterrupted_run), train_losses(run_dir)
    after = range(stopped_at, MAX_STEPS)
    assert sorted(resumed)[-len(after) :] == list(after)
    assert [resumed[step] for step in after] == [expected[step] for step in after]  # bitwise equal floats
    assert torch.load(find_resume_checkpoint(run_dir / "checkpoints"), weights_only=True)["global_step"] == MAX_STEPS
    assert (run_dir / "student" / "model.safetensors").is_file()


def test_ckpt_path_resume_in_a_new_run_dir_gives_the_uninterrupted_losses(uninterrupted_run, overrides, tmp_path):
    checkpoint = tmp_path / "step8.ckpt"
    shutil.copy(uninterrupted_run / "checkpoints" / "step0000008.ckpt", checkpoint)

    result = run_in_dir(tmp_path / "run", [*overrides, f"ckpt_path={checkpoint}"])

    assert result.returncode == 0, result.stderr[-3000:]
    expected, resumed = train_losses(uninterrupted_run), train_losses(tmp_path / "run")
    assert sorted(resumed) == list(range(8, MAX_STEPS))
    assert [resumed[step] for step in range(8, MAX_STEPS)] == [expected[step] for step in range(8, MAX_STEPS)]


def test_a_2000_step_run_resumed_at_step_1000_logs_the_uninterrupted_losses(overrides, tmp_path):
    """The issue's long check: 2000 steps (many passes over the tiny corpus, validation every 500 steps) against the
    same run resumed from its step-1000 checkpoint; every one of the 1000 losses after the resume is bitwise equal.
    About 50 s on 2 CPU cores (the tiny model takes about 12 ms per step)."""
    replaced = ("trainer.max_steps=", "trainer.val_check_interval=", "callbacks.model_checkpoint.every_n_train_steps=")
    long_run = [item for item in overrides if not item.startswith(replaced)]
    long_run += ["trainer.max_steps=2000", "trainer.val_check_interval=500"]
    long_run += ["callbacks.model_checkpoint.every_n_train_steps=1000"]
    full = run_in_dir(tmp_path / "full", long_run, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    checkpoint = tmp_path / "full" / "checkpoints" / "step0001000.ckpt"

    resumed = run_in_dir(tmp_path / "resumed", [*long_run, f"ckpt_path={checkpoint}"], timeout=600)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, after_resume = train_losses(tmp_path / "full"), train_losses(tmp_path / "resumed")
    assert sorted(expected) == list(range(2000))
    assert sorted(after_resume) == list(range(1000, 2000))
    assert [after_resume[step] for step in range(1000, 2000)] == [expected[step] for step in range(1000, 2000)]
