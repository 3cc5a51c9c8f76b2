"""`python -m distil.train` end to end: a few steps on tiny assets, export, and errors before training."""

from __future__ import annotations

import csv
import os

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from distil.evaluation.tables import format_percent, percent
from distil.run.folder_lock import FolderLock
from distil.run.run_dir_lock import RUN_LOCK_FILE
from tests.conftest import (
    assert_fill_mask_is_the_models_own,
    assert_logged_terms_weigh_into_the_loss,
    compose_config,
    run_cli,
    tiny_run_overrides,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir):
    run_dir = tmp_path_factory.mktemp("run")
    result = run_cli(
        run_dir, f"hydra.run.dir={run_dir}", *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir), "logger=csv"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_two_step_run_logs_every_loss_term_and_held_out_metrics(tiny_run):
    run_dir, result = tiny_run
    rows = assert_logged_terms_weigh_into_the_loss(run_dir, steps=2)
    train_rows = [r for r in rows if r.get("train/loss")]
    assert [bool(r.get("train/tokens_per_s")) for r in train_rows] == [False, True]  # a rate needs two batches
    assert float(train_rows[1]["train/tokens_per_s"]) > 0
    val = [r for r in rows if r.get("val/student_mlm_acc")]
    assert len(val) == 1 and 0.0 <= float(val[0]["val/teacher_mlm_acc"]) <= 1.0
    teacher_acc, student_acc = (100 * float(val[0][f"val/{m}_mlm_acc"]) for m in ("teacher", "student"))
    share = format_percent(percent(student_acc, teacher_acc))  # the end-of-run table, from the last validation
    table_row = next(line for line in result.stdout.splitlines() if line.startswith("held-out masked-LM accuracy"))
    assert table_row.split()[-3:] == [f"{teacher_acc:.2f}", f"{student_acc:.2f}", share]
    assert "2 steps in 0 min" in result.stdout
    assert f"student written to {run_dir / 'student'}" in result.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_exported_student_loads_in_transformers_and_fill_mask(tiny_run, tiny_teacher_dir):
    run_dir, _ = tiny_run
    student = AutoModelForMaskedLM.from_pretrained(run_dir / "student")
    assert type(student).__name__ == "DistilBertForMaskedLM" and student.config.n_layers == 2
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][f"student.{name}"]), name
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)  # training moved the student off its init
    assert not torch.equal(
        student.distilbert.transformer.layer[0].attention.q_lin.weight,
        teacher.bert.encoder.layer[0].attention.self.query.weight,
    )
    assert_fill_mask_is_the_models_own(run_dir / "student", "the king opened the {mask}.")


def test_vocabulary_mismatch_fails_before_training(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    from distil.train import train

    mismatched = tmp_path / "teacher_100"
    BertForMaskedLM(
        BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(mismatched)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(mismatched)
    overrides = [*tiny_run_overrides(mismatched, tiny_corpus_dir), "logger=csv", f"paths.output_dir={tmp_path / 'run'}"]
    with pytest.raises(ValueError) as error:
        train(compose_config("train", *overrides))
    assert f"has 128 tokens but the teacher teacher.name_or_path={str(mismatched)!r} has 100 token embeddings" in str(
        error.value
    )
    assert not (tmp_path / "run").exists()


def test_a_bad_value_on_the_command_line_fails_before_anything_is_loaded(tmp_path):
    """Every value check runs before the teacher loads (the values themselves: tests/reliability/test_config_checks.py);
    here the command line shows it: a teacher that cannot load is not even looked at."""
    result = run_cli(tmp_path, "distill.temperature=inf", "teacher.name_or_path=/nonexistent")
    assert result.returncode != 0
    assert "distill.temperature=inf is not allowed: it must be a finite number > 0" in result.stderr
    assert "could not load the teacher" not in result.stderr


def test_demo_without_shared_assets_or_hub_names_what_to_set(tmp_path):
    env = {"DISTIL_SHARED": str(tmp_path / "absent"), "HF_HUB_OFFLINE": "1"}
    result = run_cli(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", env=env, new_interpreter=True)
    assert result.returncode != 0
    assert "teacher.name_or_path='google/bert_uncased_L-12_H-256_A-4'" in result.stderr  # the public fallback
    assert "set DISTIL_SHARED to the shared assets folder" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_into_a_run_directory_in_use_is_refused_naming_the_first_before_anything_loads(
    tmp_path, tiny_teacher_dir, tiny_corpus_dir
):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the first run's config")
    with FolderLock(run_dir / RUN_LOCK_FILE, run_dir, "hydra.run.dir"):  # as the first run holds it
        result = run_cli(
            tmp_path, f"hydra.run.dir={run_dir}", *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir), "logger=csv"
        )
    assert result.returncode != 0
    assert f"hydra.run.dir='{run_dir}' is in use by pid {os.getpid()} on " in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".distil.lock", ".hydra"]  # no log, checkpoint or metric
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the first run's config"


def test_train_returns_the_optimized_metric_of_the_last_validation(tiny_teacher_dir, tiny_corpus_dir, tmp_path):
    """What a Hydra sweeper (Optuna, hparams_search=...) receives from each job: the metric's last logged value."""
    from distil.train import train

    overrides = [*tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 4, validate_every=2), "logger=csv"]
    overrides += [f"paths.output_dir={tmp_path}"]
    cfg = compose_config("train", *overrides, "optimized_metric=val/student_mlm_loss")

    value = train(cfg)

    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        logged = [float(row["val/student_mlm_loss"]) for row in csv.DictReader(file) if row.get("val/student_mlm_loss")]
    assert len(logged) == 2  # validations after steps 2 and 4
    assert logged[0] != logged[1] and value == pytest.approx(logged[-1], rel=1e-6)
