"""End-to-end runs shared by the reliability tests (each is a `python -m distil.train` subprocess, run once)."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.runs import CHECKPOINT_EVERY, file_digests, run_in_dir, start_in_dir, tiny_overrides

WANDB_KEY_SENTINEL = "sentinel-wandb-key-0123456789abcdef0123456789abcdef"  # fake key: must never reach a file


@dataclass
class PreemptedRun:
    run_dir: Path
    returncode: int
    digests_at_signal: dict[str, str]  # files of the run directory when SIGTERM was sent
    log: str


@pytest.fixture(scope="session")
def overrides(tiny_teacher_dir, tiny_corpus_dir) -> list[str]:
    return tiny_overrides(tiny_teacher_dir, tiny_corpus_dir)


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, overrides) -> Path:
    """The reference run, MAX_STEPS steps without interruption; it also logs to W&B (offline) with WANDB_API_KEY set
    to a sentinel (W&B does not touch the torch RNG: the losses are those of a CSV-only run)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    with_wandb = [item if item != "logger=csv" else "logger=csv_wandb" for item in overrides]
    result = run_in_dir(run_dir, with_wandb, WANDB_API_KEY=WANDB_KEY_SENTINEL, WANDB_MODE="offline")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir / "console.txt").write_text(result.stdout + result.stderr)
    return run_dir


@pytest.fixture(scope="session")
def preempted_run(tmp_path_factory, overrides) -> PreemptedRun:
    """The same run, sent SIGTERM as soon as its first periodic checkpoint exists; left as it was on exit."""
    run_dir = tmp_path_factory.mktemp("preempted")
    log_file = run_dir.parent / f"{run_dir.name}.log"
    process = start_in_dir(run_dir, overrides, log_file)
    first_checkpoint = run_dir / "checkpoints" / f"step{CHECKPOINT_EVERY:07d}.ckpt"
    deadline = time.monotonic() + 240
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, f"training ended before SIGTERM could be sent:\n{log_file.read_text()[-3000:]}"
    digests = file_digests(run_dir)
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=120)
    return PreemptedRun(run_dir, returncode, digests, log_file.read_text())
