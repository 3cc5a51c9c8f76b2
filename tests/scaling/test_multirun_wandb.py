"""`python -m distil.train -m distill.temperature=1,4`: one directory and one offline W&B run per job, one W&B group
for the multirun, the resolved config as run config and the final metrics in each run's summary."""

from __future__ import annotations

import csv

import pytest
import yaml

from tests.conftest import run_cli, tiny_run_overrides
from tests.scaling import wandb_files

TEMPERATURES = (1.0, 4.0)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir):
    tmp_path = tmp_path_factory.mktemp("multirun")
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        tmp_path,
        "-m",
        f"distill.temperature={','.join(map(str, TEMPERATURES))}",
        *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir),
        "logger=csv_wandb",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def last_csv_values(job_dir) -> dict[str, float]:
    """The last logged value of every metric in <job dir>/csv/metrics.csv."""
    values = {}
    with open(job_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v != ""})
    return values


def test_each_job_has_its_own_directory_and_config(multirun):
    job_dirs = sorted(p for p in multirun.iterdir() if p.is_dir())
    assert [p.name for p in job_dirs] == ["0", "1"]
    for job_dir, temperature in zip(job_dirs, TEMPERATURES):
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
        assert config["distill"]["temperature"] == temperature
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert len(wandb_files.offline_runs(job_dir)) == 1  # offline by default: no API key configured


def test_offline_runs_share_the_multirun_group(multirun):
    runs = [wandb_files.run_record(wandb_files.offline_runs(multirun / job)[0]) for job in ("0", "1")]
    assert runs[0].run_id != runs[1].run_id
    assert [r.run_group for r in runs] == [multirun.name, multirun.name]  # the sweep directory's name
    assert [(r.project, r.job_type) for r in runs] == [("distil", "train")] * 2


def test_run_config_is_the_resolved_hydra_config(multirun):
    for job, temperature in zip(("0", "1"), TEMPERATURES):
        config = wandb_files.config(wandb_files.offline_runs(multirun / job)[0])
        assert config["distill"]["temperature"] == temperature
        assert config["paths"]["output_dir"] == str(multirun / job)  # interpolations resolved
        assert config["trainer"]["max_steps"] == 2 and config["data"]["batch_size"] == 4


def test_summaries_hold_the_final_metrics(multirun):
    for job in ("0", "1"):
        summary = wandb_files.summary(wandb_files.offline_runs(multirun / job)[0])
        logged = last_csv_values(multirun / job)
        assert summary["trainer/global_step"] == 1  # the last of the 2 optimizer steps (steps count from 0)
        for key in ("train/loss", "train/loss_kl", "val/student_mlm_loss", "val/student_mlm_acc", "val/top1_agreement"):
            assert summary[key] == pytest.approx(logged[key], rel=1e-6), key
        assert 0.0 <= summary["val/student_mlm_acc"] <= 1.0 and summary["val/student_mlm_loss"] > 0.0
