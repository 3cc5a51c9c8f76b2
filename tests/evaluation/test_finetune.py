"""`distil.finetune`: fine-tuning learns a separable task, reports dev accuracy, compares student and teacher."""

import json
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from transformers import AutoModelForSequenceClassification

from distil.comparison_table import format_comparison
from distil.evaluation.glue_tasks import check_task_source, read_tsv
from distil.finetune import comparison_rows, finetune
from tests.conftest import CONF_DIR, compose_config, run_cli

QUICK = ["trainer.max_epochs=10", "learning_rate=1e-3", "batch_size=8", "+trainer.enable_progress_bar=false"]
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def test_cli_learns_a_separable_task_and_writes_its_dev_accuracy(tmp_path, fresh_teacher_dir, sentiment_task_dir):
    result = run_cli(
        tmp_path,
        "task=sst2",
        f"task.source={sentiment_task_dir}",
        f"model={fresh_teacher_dir}",
        f"hydra.run.dir={tmp_path}",
        *QUICK,
        module="distil.finetune",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "finetune.json").read_text())
    assert (report["task"], report["train_examples"], report["dev_examples"]) == ("sst2", 64, 16)
    entry = report["models"]["model"]
    assert entry["dev_accuracy"] >= 0.9  # chance is 0.5: the key phrases decide the label
    classifier = AutoModelForSequenceClassification.from_pretrained(fresh_teacher_dir, num_labels=2)
    assert entry["parameters"] == sum(p.numel() for p in classifier.parameters())
    assert format_comparison(comparison_rows(report["models"]), ("", "model")) in result.stdout
    assert (tmp_path / "model" / "metrics.csv").is_file()  # per-epoch dev accuracy and training loss


def test_student_and_teacher_side_by_side(tmp_path, fresh_teacher_dir, fresh_student_dir, sentiment_task_dir):
    cfg = compose_config(
        "finetune",
        f"task.source={sentiment_task_dir}",
        f"model={fresh_student_dir}",
        f"teacher_model={fresh_teacher_dir}",
        f"out_dir={tmp_path}",
        "max_dev_examples=12",
        *QUICK,
    )
    report = finetune(cfg, tmp_path)
    student, teacher = report["models"]["student"], report["models"]["teacher"]
    assert list(report["models"]) == ["teacher", "student"] and report["dev_examples"] == 12
    assert student["dev_accuracy"] >= 0.9 and teacher["dev_accuracy"] >= 0.9
    assert report["student_pct_of_teacher"] == pytest.approx(100 * student["dev_accuracy"] / teacher["dev_accuracy"])
    assert student["parameters"] < teacher["parameters"]
    rows = comparison_rows(report["models"])
    assert rows[0] == (
        "dev accuracy (%)",
        f"{100 * teacher['dev_accuracy']:.2f}",
        f"{100 * student['dev_accuracy']:.2f}",
        f"{report['student_pct_of_teacher']:.1f}%",
    )
    assert "student/teacher" in format_comparison(rows, ("", "teacher", "student", "student/teacher"))


def test_tsv_reading_keeps_quotes_and_checks_columns(tmp_path):
    (tmp_path / "train.tsv").write_text('sentence\tlabel\nit \'s a "fine" film\t1\n" unbalanced quote\t0\n')
    examples = read_tsv(tmp_path / "train.tsv", ["sentence"], "label")
    assert [(e.texts, e.label) for e in examples] == [(('it \'s a "fine" film',), 1), (('" unbalanced quote',), 0)]
    with pytest.raises(ValueError, match=r"has columns \['sentence', 'label'\]; the task needs \['question'\]"):
        read_tsv(tmp_path / "train.tsv", ["question", "sentence"], "label")


def test_bad_task_inputs_are_named_before_training(tmp_path, fresh_teacher_dir, sentiment_task_dir):
    with pytest.raises(FileNotFoundError, match=r"task.source='.*' \(task sst2\) lacks \['dev.tsv'\]"):
        (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
        check_task_source(str(tmp_path), "sst2")
    with pytest.raises(FileNotFoundError, match="task.source='/nonexistent/sst2'"):
        check_task_source("/nonexistent/sst2", "sst2")
    with pytest.raises(MissingConfigException, match="task/no_such_task"):
        compose_config("finetune", "task=no_such_task", "model=x")
    cfg = compose_config(
        "finetune",
        f"task.source={sentiment_task_dir}",
        f"model={fresh_teacher_dir}",
        "task.num_labels=1",
        f"out_dir={tmp_path}",
    )
    with pytest.raises(ValueError, match=r"labels \[1\] outside 0..0"):
        finetune(cfg, tmp_path)
    cfg = compose_config(
        "finetune", f"task.source={sentiment_task_dir}", "model=/nonexistent/model", f"out_dir={tmp_path}"
    )
    with pytest.raises(FileNotFoundError, match="model='/nonexistent/model'"):
        finetune(cfg, tmp_path)
    cfg = compose_config(
        "finetune",
        f"task.source={sentiment_task_dir}",
        f"model={tmp_path}",  # no config.json
        f"teacher_model={fresh_teacher_dir}",
        f"out_dir={tmp_path}",
    )
    with pytest.raises(FileNotFoundError, match="model='.*' has no config.json"):
        finetune(cfg, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cfg = compose_config(
        "finetune",
        f"task.source={sentiment_task_dir}",
        f"model={broken}",
        f"teacher_model={fresh_teacher_dir}",
        f"out_dir={tmp_path}",
    )
    with pytest.raises(FileNotFoundError, match="model='.*broken' is not a loadable model"):
        finetune(cfg, tmp_path)  # fails before the teacher is fine-tuned: no teacher/ log folder
    assert not (tmp_path / "teacher").exists()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_is_complete(task):
    cfg = compose_config("finetune", f"task={task}", "model=x")
    assert cfg.task.name == task and cfg.task.num_labels >= 2 and 1 <= len(cfg.task.text_fields) <= 2
    assert cfg.task.label_field and cfg.task.train_split and cfg.task.dev_split and cfg.task.source


def test_sst2_is_among_the_tasks():
    assert {"sst2", "mrpc", "rte"} <= set(TASKS)


@pytest.mark.shared
def test_shared_sst2_rows_with_the_shared_teacher(tmp_path, shared_dir):
    cfg = compose_config(
        "finetune",
        "task=sst2",
        f"model={shared_dir}/models/bert-teacher-12x256",
        f"out_dir={tmp_path}",
        "max_train_examples=64",
        "max_dev_examples=32",
        "trainer.max_epochs=1",
        "+trainer.enable_progress_bar=false",
    )
    assert Path(cfg.task.source).resolve() == (shared_dir / "data/glue/sst2").resolve()  # local copy before the hub
    report = finetune(cfg, tmp_path)
    assert (report["train_examples"], report["dev_examples"]) == (64, 32)
    accuracy = report["models"]["model"]["dev_accuracy"]
    assert accuracy * 32 == pytest.approx(round(accuracy * 32))  # a whole number of the 32 dev sentences
    mlm_head, pooler, classifier = 256 * 256 + 256 + 2 * 256 + 30_522, 256 * 256 + 256, 256 * 2 + 2
    assert report["models"]["model"]["parameters"] == 17_519_674 - mlm_head + pooler + classifier


def test_word_labels_name_the_file_the_column_the_value_and_what_is_allowed(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine film\t1\na dull film\tnegative\n")
    with pytest.raises(
        ValueError,
        match=rf"{tmp_path / 'train.tsv'}, line 3: column 'label' holds 'negative'; allowed: an integer class id",
    ):
        read_tsv(tmp_path / "train.tsv", ["sentence"], "label")


def test_a_header_only_task_file_is_named_as_having_no_rows(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'dev.tsv'} has a header but no rows"):
        read_tsv(tmp_path / "dev.tsv", ["sentence"], "label")


def test_a_model_folder_without_tokenizer_files_is_named_before_any_fine_tuning(
    tmp_path, fresh_teacher_dir, model_without_tokenizer_dir, sentiment_task_dir
):
    cfg = compose_config(
        "finetune",
        f"task.source={sentiment_task_dir}",
        f"model={model_without_tokenizer_dir}",
        f"teacher_model={fresh_teacher_dir}",
        f"out_dir={tmp_path}",
    )
    with pytest.raises(ValueError, match=f"model='{model_without_tokenizer_dir}' has no tokenizer files"):
        finetune(cfg, tmp_path)
    assert not (tmp_path / "teacher").exists()  # the teacher was not fine-tuned first
