"""Every process of a run agrees on its directory: DISTIL_RUN_DIR when a launcher sets it, and a process of rank > 0
without it (or hydra.run.dir) stops before writing anything of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import compose_config, run_cli


def composed_run_dir() -> str:
    cfg = compose_config("train", "paths.log_dir=/logs", with_hydra=True)
    return cfg.hydra.run.dir


def test_run_dir_comes_from_distil_run_dir(monkeypatch):
    monkeypatch.setenv("DISTIL_RUN_DIR", "/shared/runs/job-42")
    assert composed_run_dir() == "/shared/runs/job-42"


def test_run_dir_without_distil_run_dir_is_named_by_the_clock(monkeypatch):
    monkeypatch.delenv("DISTIL_RUN_DIR", raising=False)
    run_dir = composed_run_dir()
    assert run_dir.startswith("/logs/runs/") and len(Path(run_dir).name) == len("2025-01-31_23-59-59")


def test_rank_one_without_a_shared_run_dir_stops(tmp_path):
    result = run_cli(tmp_path, "teacher.name_or_path=/nonexistent", env={"RANK": "1"})
    assert result.returncode != 0
    assert "this process has RANK=1 but its run directory" in result.stderr
    assert "set DISTIL_RUN_DIR (or hydra.run.dir) to the same path in every process" in result.stderr


def test_rank_one_with_distil_run_dir_uses_it(tmp_path):
    shared = tmp_path / "shared_run"
    result = run_cli(tmp_path, "teacher.name_or_path=/nonexistent", env={"RANK": "1", "DISTIL_RUN_DIR": str(shared)})
    assert "this process has RANK=1" not in result.stderr  # the check passed; the missing teacher stops the run
    assert result.returncode != 0 and (shared / "train.log").is_file()
    assert f"run directory: {shared}" in (shared / "train.log").read_text()
    assert not (tmp_path / "outputs").exists()
