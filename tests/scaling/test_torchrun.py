"""scripts/torchrun.sh on the CPU: two processes each compose the config themselves (as under torchrun or srun on
many nodes) and agree on one run directory through DISTIL_RUN_DIR."""

from __future__ import annotations

import socket
import sys

import torch

from tests.conftest import REPO_ROOT, run_cli, tiny_run_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_processes_share_the_run_directory(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    run_dir = tmp_path / "shared_run"
    env = {"NPROC": "2", "PYTHON": sys.executable, "MASTER_PORT": str(free_port()), "DISTIL_RUN_DIR": str(run_dir)}
    result = run_cli(
        tmp_path,
        "trainer=ddp_cpu",
        *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir),
        "logger=csv",
        env=env,
        command=["bash", str(REPO_ROOT / "scripts" / "torchrun.sh")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()  # no process fell back to a directory named by its own clock
    log = (run_dir / "train.log").read_text()
    assert log.count(f"run directory: {run_dir}") == 2  # both processes ran Hydra and chose the same directory
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert (run_dir / "student" / "config.json").is_file()
