"""Exact resume on CPU in fp32: a run interrupted at step k and resumed logs bitwise the losses of the
uninterrupted run after k (student, AdamW moments, LR schedule, step counters, RNG states, data position).

Most runs here are MAX_STEPS=16 tiny steps (2-layer student, hidden 32, 4 x 32 tokens per batch, validation every 3
steps so that resuming also crosses validations); one run is the issue's 2000 steps resumed at step 1000.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from distil.run.resume import find_resume_checkpoint
from tests.conftest import compose_config, tiny_run_overrides
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


def test_a_2000_step_run_resumed_at_step_1000_logs_the_uninterrupted_losses(
    tiny_teacher_dir, tiny_corpus_dir, tmp_path
):
    """The issue's long check: 2000 steps (many passes over the tiny corpus, validation every 500 steps) against the
    same run resumed from its step-1000 checkpoint; every one of the 1000 losses after the resume is bitwise equal.
    Both runs are `distil.train`'s `train` in this process (the other tests start the command itself): a resume
    restores everything it needs from the checkpoint, so the process it runs in does not matter, and this saves two
    process starts."""
    from distil.train import train

    long_run = [*tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 2000, 500, 1000), "logger=csv"]
    train(compose_config("train", *long_run, f"paths.output_dir={tmp_path / 'full'}"))
    checkpoint = tmp_path / "full" / "checkpoints" / "step0001000.ckpt"

    resumed_run = [*long_run, f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={checkpoint}"]
    train(compose_config("train", *resumed_run))

    expected, after_resume = train_losses(tmp_path / "full"), train_losses(tmp_path / "resumed")
    assert sorted(expected) == list(range(2000))
    assert sorted(after_resume) == list(range(1000, 2000))
    assert [after_resume[step] for step in range(1000, 2000)] == [expected[step] for step in range(1000, 2000)]
