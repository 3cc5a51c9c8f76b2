"""Launch `python -m distil.train` in a subprocess from the repository root, isolated from this machine's setup.

The child gets no W&B key, mode, directory or netrc of the machine, no rank variables and no `DISTIL_RUN_DIR`
(unless `env` sets them); W&B's config and staging files and Hydra's default run directories go under `home`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

MACHINE_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "DISTIL_RUN_DIR", "RANK", "SLURM_PROCID")
TRAIN = (sys.executable, "-m", "distil.train")


def train_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without `MACHINE_ENV`, W&B files under `home`, then `env`."""
    isolated = {k: v for k, v in os.environ.items() if k not in MACHINE_ENV}
    isolated.update(
        NETRC=str(home / "no-netrc"),  # a missing file: no W&B login of the machine
        WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_DATA_DIR=str(home / "wandb-data"),  # staged artifact files
        TOKENIZERS_PARALLELISM="false",
    )
    return isolated | (env or {})


def train_command(home: Path, args: tuple[str, ...], command: tuple[str, ...] | list[str] | None) -> list[str]:
    return [*(command or TRAIN), *args, f"paths.log_dir={home / 'outputs'}"]


def run_train(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    """Run `command` (default `python -m distil.train`) with Hydra overrides `args` to the end; output captured."""
    return subprocess.run(
        train_command(home, args, command),
        cwd=REPO_ROOT,
        env=train_env(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_train(home: Path, *args: str, log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m distil.train` with overrides `args` in the background, stdout and stderr to `log_file`."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            train_command(home, args, None),
            cwd=REPO_ROOT,
            env=train_env(home, env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
