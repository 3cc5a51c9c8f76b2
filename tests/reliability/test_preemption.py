"""SIGTERM mid-run: a checkpoint of the last finished step is written atomically and the process exits 143."""

from __future__ import annotations

import torch

from tests.reliability.runs import CHECKPOINT_EVERY, MAX_STEPS, train_losses


def test_sigterm_writes_a_checkpoint_and_exits_with_143(preempted_run):
    assert preempted_run.returncode == 143, preempted_run.log[-3000:]
    checkpoint = torch.load(preempted_run.run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert CHECKPOINT_EVERY <= checkpoint["global_step"] < MAX_STEPS
    assert "received SIGTERM: checkpoint of step" in preempted_run.log
    assert not (preempted_run.run_dir / "student").exists()  # a preempted run is not a finished run
    assert not list(preempted_run.run_dir.rglob("*.tmp"))
    logged = train_losses(preempted_run.run_dir)
    assert sorted(logged)[: CHECKPOINT_EVERY] == list(range(CHECKPOINT_EVERY))
