"""`distil.finetune`: every task kind learns a tiny task end to end and is scored with its official metrics; a saved
fine-tuned model is the `distill_from` of task distillation; bad input is named before training;
`distil.finetune_comparison` reports teacher, student and distilled student over seeds."""

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distil.evaluation.tables import format_comparison
from distil.finetune_comparison import HEADER, earlier_teacher
from distil.modules.objective import ObjectiveWeights
from distil.run.callbacks.nonfinite_guard import NonFiniteLossError
from distil.run.output_dirs import MARKER_FILE
from distil.tasks.fine_tuned_teacher import load_fine_tuned_teacher
from distil.tasks.finetuning import finetune, finetune_and_report
from distil.tasks.score_table import score_rows
from tests.conftest import CONF_DIR, compose_config, run_cli
from tests.tiny_assets import tiny_tokenizer

QUICK = ["trainer.max_epochs=10", "learning_rate=1e-3", "batch_size=8", "+trainer.enable_progress_bar=false"]
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
KIND_OVERRIDES = {  # task kind -> (config overrides besides task.source=DIR, main metric, floor of teacher, student)
    "classification": (["task=sst2"], "accuracy", 0.9, 0.8),  # chance 0.5: the key phrases decide the label
    "regression": (["task=stsb", "trainer.max_epochs=20"], "pearson", 0.8, 0.7),  # key phrases decide the score
    "ner": (["task=conll2003"], "f1", 0.85, 0.5),  # the word decides its tag; the student has 1 layer
    "qa": (  # the answer is X in "the X walked", one of 4 words
        ["task=squad", "task.train_file=train.json", "task.dev_file=dev.json", "task.max_length=32", "task.stride=8"],
        "exact_match",
        0.75,
        0.75,
    ),
}


@pytest.fixture
def task_dirs(sentiment_task_dir, similarity_task_dir, ner_task_dir, qa_task_dir) -> dict[str, Path]:
    return {
        "classification": sentiment_task_dir,
        "regression": similarity_task_dir,
        "ner": ner_task_dir,
        "qa": qa_task_dir,
    }


def finetune_in_process(out_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "finetune", f"out_dir={out_dir}", f"teacher_cache_dir={out_dir.parent / 'cache'}", *QUICK, *overrides
    )
    return finetune(cfg, out_dir)


@pytest.mark.parametrize("kind", list(KIND_OVERRIDES))
def test_each_task_kind_fine_tunes_saves_and_distils(tmp_path, kind, task_dirs, fresh_teacher_dir, fresh_student_dir):
    overrides, metric, teacher_floor, student_floor = KIND_OVERRIDES[kind]
    data = [*overrides, f"task.source={task_dirs[kind]}"]
    teacher = finetune_in_process(tmp_path / "teacher", *data, f"model={fresh_teacher_dir}", "save_model=true")
    assert teacher["model"]["dev"][metric] >= teacher_floor
    saved = Path(teacher["model"]["saved"])
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER_FILE} <= {p.name for p in saved.iterdir()}
    distilled = finetune_in_process(
        tmp_path / "distilled", *data, f"model={fresh_student_dir}", f"distill_from={saved}", "seed=3"
    )
    assert distilled["model"]["dev"][metric] >= student_floor
    assert distilled["distillation"]["teacher"]["cache"] == "miss"
    assert distilled["model"]["saved"] is None and not (tmp_path / "distilled" / "model").exists()
    assert distilled["model"]["parameters"] < teacher["model"]["parameters"]  # the teacher is not part of it
    assert set(distilled["model"]["dev"]) == set(distilled["metrics"])


def test_saved_model_reloads_with_its_dev_score_and_distillation_reuses_the_cache(
    tmp_path, sentiment_task_dir, fresh_teacher_dir, fresh_student_dir
):
    data = ["task=sst2", f"task.source={sentiment_task_dir}", "trainer.max_epochs=4"]
    teacher = finetune_in_process(tmp_path / "teacher", *data, f"model={fresh_teacher_dir}", "save_model=true")
    saved = teacher["model"]["saved"]
    model = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    task = instantiate(compose_config("finetune", *data, "model=x").task)
    dev = task.examples("dev")
    with torch.no_grad():
        logits = model(**tokenizer([e.texts[0] for e in dev], padding=True, return_tensors="pt")).logits
    accuracy = (logits.argmax(-1) == torch.tensor([e.label for e in dev])).float().mean().item()
    assert accuracy == pytest.approx(teacher["model"]["dev"]["accuracy"])  # the saved model is the scored model
    with_cos = ObjectiveWeights(2.0, alpha_kl=0.5, alpha_label=0.5, alpha_cos=1.0, key="task_distillation")
    frozen = load_fine_tuned_teacher(saved, task, tokenizer, 32, with_cos)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(
        ValueError, match=r"task_distillation.alpha_cos=1.0 needs equal widths, but distill_from=.* has hidden size 32"
    ):
        load_fine_tuned_teacher(saved, task, tokenizer, 64, with_cos)
    with pytest.raises(ValueError, match=r"has a tokenizer with another vocabulary than the student's \(128 vs 127"):
        load_fine_tuned_teacher(saved, task, tiny_tokenizer(vocab_size=127), 32, with_cos)
    runs = [
        finetune_in_process(tmp_path / f"distilled{i}", *data, f"model={fresh_student_dir}", f"distill_from={saved}")
        for i in range(2)
    ]
    first, second = (run["distillation"]["teacher"] for run in runs)
    assert (first["cache"], second["cache"]) == ("miss", "hit") and first["file"] == second["file"]
    assert runs[0]["model"]["dev"] == runs[1]["model"]["dev"]  # same seed, same teacher outputs: the same student
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    model.save_pretrained(saved)  # a teacher whose outputs are NaN: refused, never cached
    with pytest.raises(ValueError, match=r"distill_from=.* gives NaN or inf \['logits'\] on the training features"):
        finetune_in_process(tmp_path / "nan", *data, f"model={fresh_student_dir}", f"distill_from={saved}")


def test_bad_inputs_are_named_before_training(tmp_path, sentiment_task_dir, fresh_teacher_dir, fresh_student_dir):
    data = ["task=sst2", f"task.source={sentiment_task_dir}", f"model={fresh_student_dir}"]
    with pytest.raises(ValueError, match=r"distill_from=.*has no fine-tuned AutoModelForSequenceClassification head"):
        finetune_in_process(tmp_path / "a", *data, f"distill_from={fresh_teacher_dir}")  # a masked LM, no head
    with pytest.raises(
        InstantiationException, match=r"task_distillation.temperature=0 is not allowed: it must be a finite number > 0"
    ):
        finetune_in_process(
            tmp_path / "b", *data, f"distill_from={fresh_teacher_dir}", "task_distillation.temperature=0"
        )
    with pytest.raises(FileNotFoundError, match="distill_from='/nonexistent/teacher'"):
        finetune_in_process(tmp_path / "c", *data, "distill_from=/nonexistent/teacher")
    bad_labels = tmp_path / "bad_labels"
    bad_labels.mkdir()
    (bad_labels / "dev.tsv").write_text((sentiment_task_dir / "dev.tsv").read_text())
    (bad_labels / "train.tsv").write_text((sentiment_task_dir / "train.tsv").read_text() + "a fine film .\t2\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 66: column 'label' holds '2'; allowed: a class id 0..1"):
        finetune_in_process(tmp_path / "d", *data, f"task.source={bad_labels}")
    with pytest.raises(FileNotFoundError, match=r"task.source='/nonexistent/sst2' \(task sst2\) is not a directory"):
        finetune_in_process(tmp_path / "e", *data, "task.source=/nonexistent/sst2")
    with pytest.raises(ValueError, match=r"max_train_examples=0 is not allowed: an integer >= 1 or null"):
        finetune_in_process(tmp_path / "e", *data, "max_train_examples=0")
    with pytest.raises(ValueError, match=r"trainer.max_epochs=0 is not allowed: an integer >= 1"):
        finetune_in_process(tmp_path / "e", *data, "trainer.max_epochs=0")
    with pytest.raises(MissingConfigException, match="task/no_such_task"):
        compose_config("finetune", "task=no_such_task", "model=x")
    (tmp_path / "f" / "model").mkdir(parents=True)
    (tmp_path / "f" / "model" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"save_model='.*model' holds notes.txt"):
        finetune_in_process(tmp_path / "f", *data, "save_model=true")
    assert (tmp_path / "f" / "model" / "notes.txt").read_text() == "mine"
    for name in "abcdef":
        assert not (tmp_path / name / "log").exists()  # no training started


def test_a_teacher_fine_tuned_on_another_task_is_refused_naming_both_before_training(
    tmp_path, sentiment_task_dir, fresh_teacher_dir, fresh_student_dir
):
    cola_teacher = tmp_path / "cola_teacher"
    shutil.copytree(fresh_teacher_dir, cola_teacher)
    (cola_teacher / MARKER_FILE).write_text(json.dumps({"kind": "hf_model", "task": "cola"}))  # as finetune writes
    data = ["task=sst2", f"task.source={sentiment_task_dir}", f"model={fresh_student_dir}"]
    with pytest.raises(ValueError, match=r"distill_from='.*cola_teacher' was fine-tuned on task cola .*, not sst2"):
        finetune_in_process(tmp_path / "run", *data, f"distill_from={cola_teacher}")
    assert not (tmp_path / "run" / "log").exists()


def test_a_non_finite_loss_stops_fine_tuning_naming_it_and_reports_no_score(
    tmp_path, sentiment_task_dir, fresh_student_dir
):
    broken = tmp_path / "broken"
    shutil.copytree(fresh_student_dir, broken)
    model = AutoModelForSequenceClassification.from_pretrained(broken)
    with torch.no_grad():
        model.distilbert.embeddings.LayerNorm.weight[0] = float("nan")  # every loss is NaN
    model.save_pretrained(broken)
    cfg = compose_config(
        "finetune",
        f"out_dir={tmp_path / 'run'}",
        *QUICK,
        "task=sst2",
        f"task.source={sentiment_task_dir}",
        f"model={broken}",
        "trainer.max_epochs=1",
    )
    with pytest.raises(NonFiniteLossError, match=r"no optimizer step was applied: all 8 steps of the run had a NaN"):
        finetune_and_report(cfg)
    assert not (tmp_path / "run" / "finetune.json").exists()


OFFICIAL_METRICS = {
    "cola": ["matthews_correlation", "accuracy"],
    "mrpc": ["f1", "accuracy"],
    "qqp": ["f1", "accuracy"],
    "stsb": ["pearson", "spearman"],
    "conll2003": ["f1", "precision", "recall"],
    "squad": ["f1", "exact_match"],
    "squad_v2": ["f1", "exact_match"],
}


@pytest.mark.parametrize("name", TASKS)
def test_every_task_config_instantiates_with_its_official_metrics(name):
    task = instantiate(compose_config("finetune", f"task={name}", "model=x").task)
    assert task.name == name and task.metrics == OFFICIAL_METRICS.get(name, ["accuracy"])
    assert task.source and task.hub_splits["train"] and task.hub_splits["dev"]


def test_the_issue_tasks_are_there():
    glue = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    assert glue | {"conll2003", "squad", "squad_v2"} <= set(TASKS)


def compare_cli(tmp_path: Path, run_dir: str, task_dir: Path, teacher: Path, student: Path, *args: str) -> tuple:
    """`python -m distil.finetune_comparison` of the tiny task into `tmp_path/run_dir`: (stdout, comparison.json)."""
    result = run_cli(
        tmp_path,
        "task=sst2",
        f"task.source={task_dir}",
        f"teacher_model={teacher}",
        f"student_model={student}",
        "max_dev_examples=8",
        f"hydra.run.dir={tmp_path / run_dir}",
        *QUICK,
        "trainer.max_epochs=2",
        *args,
        module="distil.finetune_comparison",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads((tmp_path / run_dir / "comparison.json").read_text())


@pytest.mark.slow
def test_comparison_command_reports_three_models_over_seeds(
    tmp_path, fresh_teacher_dir, fresh_student_dir, sentiment_task_dir
):
    models = (sentiment_task_dir, fresh_teacher_dir, fresh_student_dir)
    stdout, report = compare_cli(tmp_path, "run", *models, "seeds=[1,2]")
    assert report["seeds"] == [1, 2] and list(report["runs"]) == ["teacher", "student", "distilled"]
    for run in ("teacher", "student", "distilled"):
        accuracies = [r["model"]["dev"]["accuracy"] for r in report["runs"][run]]
        assert [r["settings"]["seed"] for r in report["runs"][run]] == [1, 2]
        assert report["summary"][run]["dev/accuracy"]["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert report["summary"][run]["dev/accuracy"]["std"] == pytest.approx(statistics.stdev(accuracies))
    teachers = [r["distillation"]["teacher"]["path"] for r in report["runs"]["distilled"]]
    assert teachers == [f"{tmp_path}/run/seed{s}/teacher/model" for s in (1, 2)]  # each seed's own teacher
    columns = dict(zip(HEADER[1:4], report["runs"].values()))
    assert format_comparison(score_rows(["accuracy"], columns, reference="teacher"), HEADER) in stdout
    assert " ± " in stdout
    # the seed-1 teacher reused: no teacher run, and its cached outputs are hits
    _, reused = compare_cli(tmp_path, "again", *models, f"finetuned_teacher={tmp_path}/run/seed1/teacher", "seeds=[5]")
    assert reused["runs"]["teacher"] == [report["runs"]["teacher"][0]]
    assert not (tmp_path / "again" / "seed5" / "teacher").exists()
    assert [c["cache"] for c in reused["teacher_cache"]] == ["hit"]


def test_an_earlier_teacher_run_must_hold_a_saved_model_of_the_task(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"finetuned_teacher='.*' lacks finetune.json or model/config.json"):
        earlier_teacher(str(tmp_path), "sst2")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "finetune.json").write_text(json.dumps({"task": "cola"}))
    with pytest.raises(ValueError, match=r"finetuned_teacher='.*' was fine-tuned on task cola, not sst2"):
        earlier_teacher(str(tmp_path), "sst2")
    assert earlier_teacher(str(tmp_path), "cola") == {"task": "cola"}
