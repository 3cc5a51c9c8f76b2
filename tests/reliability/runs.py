"""Helpers of the end-to-end reliability tests: launch `python -m distil.train` on the tiny assets, read its losses."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

from tests.conftest import run_cli, start_cli, tiny_run_overrides

MAX_STEPS = 16  # optimizer steps of every end-to-end run (tiny model: about 0.1 s each on 2 CPU cores)
CHECKPOINT_EVERY = 4  # periodic checkpoint interval (steps)


def tiny_overrides(teacher_dir: Path, corpus_dir: Path) -> list[str]:
    """A 2-layer student of the tiny teacher on the tiny corpus, fp32 on CPU, validation every 3 steps."""
    return [*tiny_run_overrides(teacher_dir, corpus_dir, MAX_STEPS, 3, CHECKPOINT_EVERY), "logger=csv"]


def run_in_dir(run_dir: Path, overrides: list[str], timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m distil.train` in `run_dir` to completion (or failure) and return its result."""
    return run_cli(home_of(run_dir), f"hydra.run.dir={run_dir}", *overrides, env=env, timeout=timeout)


def start_in_dir(run_dir: Path, overrides: list[str], log_file: Path) -> subprocess.Popen:
    """Start `python -m distil.train` in `run_dir` in the background, stdout and stderr to `log_file`."""
    return start_cli(home_of(run_dir), f"hydra.run.dir={run_dir}", *overrides, log_file=log_file)


def home_of(run_dir: Path) -> Path:
    """Where the run's W&B settings go: beside the run directory, so they never change its file digests."""
    return run_dir.parent / f"{run_dir.name}.home"


def train_losses(run_dir: Path) -> dict[int, float]:
    """Logged `train/loss` per step from `<run_dir>/csv/metrics.csv` (a later row for the same step wins)."""
    with open(run_dir / "csv" / "metrics.csv") as file:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(file) if row.get("train/loss")}


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory`, by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
