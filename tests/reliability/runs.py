"""Helpers of the end-to-end reliability tests: launch `python -m distil.train` on the tiny assets, read its losses."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_assets import tiny_train_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 16  # optimizer steps of every end-to-end run (tiny model: about 0.1 s each on 2 CPU cores)
CHECKPOINT_EVERY = 4  # periodic checkpoint interval (steps)


def tiny_overrides(teacher_dir: Path, corpus_dir: Path) -> list[str]:
    """A 2-layer student of the tiny teacher on the tiny corpus, fp32 on CPU, validation every 3 steps."""
    return [
        "experiment=demo",
        *tiny_train_overrides(teacher_dir, corpus_dir),
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.val_check_interval=3",
        "logger=csv",
        f"callbacks.model_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
    ]


def train_command(run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "distil.train", f"hydra.run.dir={run_dir}", *overrides]


def train_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_train(run_dir: Path, overrides: list[str], timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m distil.train` to completion (or failure) and return its result."""
    return subprocess.run(
        train_command(run_dir, overrides),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=train_env(**env),
    )


def start_train(run_dir: Path, overrides: list[str], log_file: Path) -> subprocess.Popen:
    """Start `python -m distil.train` in the background, stdout and stderr to `log_file`."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            train_command(run_dir, overrides), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=train_env()
        )


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
