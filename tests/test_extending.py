"""docs/extending.md, done as it shows: the code blocks it says the repository holds are the repository's, and its
commands run, on tiny models (a tiny ELECTRA generator, the tiny teacher, a tiny folder of reviews)."""

from __future__ import annotations

import csv
import importlib
import inspect
import re
import shlex

import pytest
from transformers import AutoModelForMaskedLM

from distil.tasks.finetuning import finetune_and_report
from distil.train import train
from tests.conftest import REPO_ROOT, compose_config, run_cli, tiny_run_overrides
from tests.model_fixtures import sentiment_rows
from tests.tasks.test_finetuning import QUICK
from tests.tiny_assets import write_tiny_teacher

PAGE = (REPO_ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


def section(title: str) -> str:
    return PAGE.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[tuple[dict[str, str], str]]:
    """(the block's `key=value` marks, its text) of every `language` block of `text`."""
    found = []
    for match in BLOCK.finditer(text):
        if match.group(1) == language:
            marks = dict(mark.split("=", 1) for mark in match.group(2).split())
            found.append((marks, match.group(3)))
    return found


def commands(text: str, program: str) -> list[list[str]]:
    """The arguments after `python -m <program>` of each such line of the `bash` blocks of `text`."""
    lines = [line for _, body in blocks(text, "bash") for line in body.splitlines()]
    return [shlex.split(line, comments=True)[3:] for line in lines if line.startswith(f"python -m {program} ")]


def tiny_training(teacher_dir, corpus_dir, output_dir, with_teacher: bool = True) -> list[str]:
    """A tiny run's overrides (2 steps) into `output_dir`; without its teacher when the command shown names one."""
    overrides = tiny_run_overrides(teacher_dir, corpus_dir)
    overrides = [o for o in overrides if with_teacher or not o.startswith("teacher.name_or_path=")]
    return [*overrides, "logger=csv", f"paths.output_dir={output_dir}"]


def test_the_page_shows_the_repositorys_code():
    marked = [(marks, body) for language in ("python", "yaml") for marks, body in blocks(PAGE, language) if marks]
    assert len(marked) == 4  # the family's file and registry line, the loss function, the task's new YAML
    for marks, body in marked:
        if "file" in marks:
            assert (REPO_ROOT / marks["file"]).read_text(encoding="utf-8") == body, marks
        elif "line" in marks:
            lines = (REPO_ROOT / marks["line"]).read_text(encoding="utf-8").splitlines()
            assert body.strip() in [line.strip() for line in lines], marks
        elif "function" in marks:
            module, name = marks["function"].rsplit(".", 1)
            assert inspect.getsource(getattr(importlib.import_module(module), name)) == body, marks
        else:
            assert not (REPO_ROOT / marks["new"]).exists(), marks  # a fork's own file, not the template's


def test_the_family_section_distils_an_electra_generator(tmp_path, tiny_corpus_dir):
    (arguments,) = commands(section("A model family: ELECTRA's generator"), "distil.train")
    teacher_dir = write_tiny_teacher(tmp_path / "electra", "electra", num_layers=4)
    as_shown = [argument.replace("google/electra-base-generator", str(teacher_dir)) for argument in arguments]
    run_dir = tmp_path / "run"
    result = run_cli(
        tmp_path, *tiny_training(teacher_dir, tiny_corpus_dir, run_dir), *as_shown, f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    student, info = AutoModelForMaskedLM.from_pretrained(run_dir / "student", output_loading_info=True)
    assert type(student).__name__ == "ElectraForMaskedLM" and student.config.num_hidden_layers == 2
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_the_loss_term_section_adds_a_logged_term(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    (arguments,) = commands(section("A loss term: reverse KL"), "distil.train")
    train(compose_config("train", *tiny_training(tiny_teacher_dir, tiny_corpus_dir, tmp_path), *arguments))
    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        logged = [
            float(row["train/loss_reverse_kl"]) for row in csv.DictReader(file) if row.get("train/loss_reverse_kl")
        ]
    assert len(logged) == 2 and all(value > 0 for value in logged)


def test_the_task_section_fine_tunes_and_distils_on_its_yaml(tmp_path, fresh_teacher_dir, fresh_student_dir):
    text = section("A task: your own classification data")
    ((marks, task_yaml),) = blocks(text, "yaml")
    (tmp_path / marks["new"]).parent.mkdir(parents=True)
    (tmp_path / marks["new"]).write_text(task_yaml, encoding="utf-8")  # conf/task/my_reviews.yaml of a config folder
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    for name, count, seed in (("train.tsv", 64, 0), ("dev.tsv", 16, 1)):
        (reviews / name).write_text(sentiment_rows(count, seed).replace("sentence\tlabel", "review\tpositive", 1))
    alone, teacher, distilled = commands(text, "distil.finetune")
    shown = {"$RUN/student": str(fresh_student_dir), "$TEACHER": str(fresh_teacher_dir), "outputs": str(tmp_path)}
    where = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"task.source={reviews}", *QUICK]

    def run(arguments: list[str], out_dir: str) -> dict:
        for placeholder, value in shown.items():
            arguments = [argument.replace(placeholder, value) for argument in arguments]
        run_dir = [argument.split("=", 1)[1] for argument in arguments if argument.startswith("hydra.run.dir=")]
        arguments = [argument for argument in arguments if not argument.startswith("hydra.run.dir=")]
        cfg = compose_config("finetune", *where, *arguments, f"out_dir={(run_dir or [tmp_path / out_dir])[0]}")
        return finetune_and_report(cfg)[0]

    assert run(alone, "alone")["model"]["dev"]["accuracy"] >= 0.8  # the key phrases decide the label
    run(teacher, "teacher")
    report = run(distilled, "distilled")
    assert report["task"] == "my_reviews" and report["distillation"]["teacher"]["path"].startswith(str(tmp_path))
    assert report["settings"]["max_length"] == 128  # the task's length, from the root config's max_length


@pytest.fixture(autouse=True)
def no_stray_task_file():
    """The page's task YAML is a fork's file: the tests never leave it in the template's conf/."""
    yield
    assert not (REPO_ROOT / "conf" / "task" / "my_reviews.yaml").exists()
