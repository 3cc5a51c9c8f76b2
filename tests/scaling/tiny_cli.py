"""Run `python -m distil.train` on the tiny on-disk teacher and corpus, in a clean W&B environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_assets import tiny_train_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
WANDB_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "DISTIL_RUN_DIR", "RANK", "SLURM_PROCID")


def tiny_overrides(teacher_dir: Path, corpus_dir: Path, steps: int = 2) -> list[str]:
    """A run of `steps` optimizer steps on 4 rows of 32 tokens, validated once at the end on 2 batches."""
    return [
        *tiny_train_overrides(teacher_dir, corpus_dir),
        "data.val_batch_size=4",
        "data.documents_per_block=8",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
    ]


def run_train(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, command: list[str] | None = None, timeout: int = 240
):
    """`python -m distil.train *args` (or `command` + args) from the repository root, with no W&B key, mode or netrc
    of the machine (NETRC points to a missing file) unless `env` sets them; all outputs go under tmp_path."""
    clean = {k: v for k, v in os.environ.items() if k not in WANDB_ENV}
    clean.update(
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
    )  # staged artifact files
    clean.update(env or {})
    command = [*(command or [sys.executable, "-m", "distil.train"]), *args, f"paths.log_dir={tmp_path / 'outputs'}"]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=timeout, check=False
    )
