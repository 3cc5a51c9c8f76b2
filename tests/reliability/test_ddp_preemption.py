"""Preemption and exact resume with 2 DDP processes (gloo on CPU): SIGTERM reaches only the launching process (rank 0),
both ranks still save and stop at the same step, and resume=auto continues with the uninterrupted run's losses."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from tests.reliability.runs import CHECKPOINT_EVERY, MAX_STEPS, run_in_dir, start_in_dir, train_losses

DDP = ["trainer=ddp_cpu", "data.documents_per_block=8"]  # 2 processes; smaller blocks so both get rows of the corpus


@pytest.fixture(scope="module")
def ddp_runs(overrides, tmp_path_factory) -> tuple[Path, Path, int, str]:
    """(uninterrupted run, preempted-then-resumed run, exit status of the preempted launch, its log)."""
    base = tmp_path_factory.mktemp("ddp")
    reference = run_in_dir(base / "uninterrupted", [*overrides, *DDP])
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir, log_file = base / "preempted", base / "preempted.log"
    process = start_in_dir(run_dir, [*overrides, *DDP], log_file)
    first_checkpoint = run_dir / "checkpoints" / f"step{CHECKPOINT_EVERY:07d}.ckpt"
    deadline = time.monotonic() + 240
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, log_file.read_text()[-3000:]
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=120)
    log = log_file.read_text()
    resumed = run_in_dir(run_dir, [*overrides, *DDP, "resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return base / "uninterrupted", run_dir, returncode, log


def test_sigterm_to_rank_0_stops_both_ranks_at_the_same_step_with_one_checkpoint(ddp_runs):
    _, _, returncode, log = ddp_runs
    assert returncode == 143, log[-3000:]
    assert "received SIGTERM: checkpoint of step" in log  # rank 0
    assert "received a signal on another rank: checkpoint of step" in log  # rank 1, told by the all-reduce
    steps = {
        line.split("checkpoint of step ")[1].split()[0] for line in log.splitlines() if "checkpoint of step" in line
    }
    assert len(steps) == 1


def test_ddp_resume_auto_continues_with_the_uninterrupted_losses(ddp_runs):
    uninterrupted, run_dir, _, _ = ddp_runs
    checkpoint = torch.load(run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert len(checkpoint["callbacks"]["RngStateCheckpoint"]["ranks"]) == 2  # every rank's RNG state
    assert sorted(checkpoint["CorpusDataModule"]["positions"]) == [0, 1]  # every rank's data position
    stopped_at = checkpoint["global_step"]
    assert CHECKPOINT_EVERY <= stopped_at < MAX_STEPS
    expected, resumed = train_losses(uninterrupted), train_losses(run_dir)
    after = range(stopped_at, MAX_STEPS)
    assert [resumed[step] for step in after] == [expected[step] for step in after]
