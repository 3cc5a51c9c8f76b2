"""Two-process DDP on the CPU (gloo) with Lightning's own launcher: one run directory for both processes, one
checkpoint, one W&B run (rank 0), no API key in any file; and a multirun of DDP jobs runs each job once."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from tests.conftest import run_cli, tiny_run_overrides
from tests.scaling import wandb_files

FAKE_API_KEY = "distil-test-" + "0123456789abcdef" * 2  # 44 characters, never sent anywhere: the run is offline


def files_containing(root, text: str) -> list[str]:
    needle = text.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir):
    tmp_path = tmp_path_factory.mktemp("ddp")
    result = run_cli(
        tmp_path,
        "trainer=ddp_cpu",
        *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 3),
        "logger=csv_wandb",
        "logger.wandb.mode=offline",  # an API key is set below, which would otherwise mean online
        "logger.wandb.log_model=true",  # the last checkpoint as an artifact (staged offline, uploaded by wandb sync)
        env={"WANDB_API_KEY": FAKE_API_KEY},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, result


def test_both_processes_write_into_one_run_directory(ddp_run):
    tmp_path, result = ddp_run
    run_dirs = list((tmp_path / "outputs" / "runs").iterdir())  # named by process 0's clock; no DISTIL_RUN_DIR set
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
    output = result.stdout + result.stderr  # process 1 inherits process 0's streams
    assert output.count("Initializing distributed: GLOBAL_RANK") == 2 and "MEMBER: 2/2" in output


def test_one_checkpoint_after_three_steps_and_one_metrics_file(ddp_run):
    tmp_path, _ = ddp_run
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 3
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [0, 1, 2]  # rank 0 only: no duplicate rows
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["trainer"]["devices"] == 2 and config["trainer"]["strategy"] == "ddp"


def test_only_rank_zero_logs_to_wandb_with_the_checkpoint_and_the_key_is_written_nowhere(ddp_run):
    tmp_path, _ = ddp_run
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    runs = wandb_files.offline_runs(run_dir)
    assert len(runs) == 1
    assert wandb_files.summary(runs[0])["trainer/global_step"] == 2  # the last of 3 optimizer steps
    artifacts = [r.artifact for r in wandb_files.read_records(runs[0]) if r.WhichOneof("record_type") == "artifact"]
    assert [(a.type, list(a.aliases), [f.path for f in a.manifest.contents]) for a in artifacts] == [
        ("model", ["latest"], ["model.ckpt"])
    ]
    assert files_containing(tmp_path, FAKE_API_KEY) == []


def test_multirun_of_ddp_jobs_runs_each_job_once(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        tmp_path,
        "-m",
        "distill.temperature=1.0,4.0",
        "trainer=ddp_cpu",
        *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir),
        "logger=csv",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Launching 2 jobs") == 1  # the processes of rank 1 ran their job, not the sweep again
    assert not (tmp_path / "outputs").exists()  # no process made a directory of its own
    for job, temperature in (("0", 1.0), ("1", 4.0)):
        job_dir = sweep_dir / job
        assert sorted(p.name for p in job_dir.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
        assert torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
        assert yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())["distill"]["temperature"] == temperature
