"""`distil.ablation`: the commands it runs for each variant, resuming, and the table built from their reports (the
commands themselves are replaced by a recorder that writes the reports they would write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from distil.ablation import ablation_rows, run_ablation, run_module
from distil.modules.teacher import load_teacher_config
from distil.run.config_checks import check_distill_config, check_student_config
from tests.conftest import CONF_DIR, compose_config

TEACHER_ACC = {"unseen_text": 0.25, "demo": 0.50}
STUDENT_ACC = {"full": 0.24, "no_kl": 0.20}  # on unseen_text; the demo split gets 2x these
DEV_ACC = {"teacher": 0.80, "full": 0.78, "no_kl": 0.70}


class RecordingRunner:
    """Records (module, arguments) and writes the files the real command writes, with the numbers above."""

    def __init__(self, out_dir: Path, prediction: str = "mlm") -> None:
        self.out_dir = out_dir
        self.prediction = prediction  # the reports' kind of scores: mlm or next_token
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, module: str, arguments: list[str], log_file: Path) -> None:
        self.calls.append((module, arguments))
        values = dict(a.split("=", 1) for a in arguments if "=" in a)
        folder = Path(values["hydra.run.dir"])
        folder.mkdir(parents=True)
        if module == "distil.train":
            (folder / "student").mkdir()
            (folder / "student" / "config.json").write_text("{}")
            (folder / ".hydra").mkdir()
            hydra_config = "models: /models\nteacher:\n  name_or_path: ${models}/teacher\n"  # saved unresolved
            (folder / ".hydra" / "config.yaml").write_text(hydra_config)
        elif module == "distil.evaluate":
            variant, data = folder.parent.name, values["data"]
            scale = 2 if data.startswith("demo") else 1
            accuracy = f"{self.prediction}_acc"
            report = {
                "prediction": self.prediction,
                "teacher": {accuracy: TEACHER_ACC[data.removesuffix("_causal")], "ppl": 10.0},
                "student": {accuracy: scale * STUDENT_ACC[variant], "ppl": 20.0 - 10 * STUDENT_ACC[variant]},
                "top1_agreement": 0.5 + STUDENT_ACC[variant],
            }
            (folder / "report.json").write_text(json.dumps(report))
        else:
            model = folder.parent.name
            report = {"task": "sst2", "train_examples": 4000, "dev_examples": 872, "metrics": ["accuracy"]}
            report["model"] = {"dev": {"accuracy": DEV_ACC[model]}}
            (folder / "finetune.json").write_text(json.dumps(report))


def ablation_config(variants=None):
    """conf/ablation.yaml with `variants` in place of its own (default: the whole objective and no KL)."""
    cfg = compose_config("ablation")
    with open_dict(cfg):
        cfg.variants = {"full": [], "no_kl": ["distill.alpha_kl=0"]} if variants is None else variants
    return cfg


def test_every_variant_is_trained_scored_and_fine_tuned_once_and_the_teacher_fine_tuned_once(tmp_path):
    runner = RecordingRunner(tmp_path)
    results = run_ablation(ablation_config(), tmp_path, runner)
    modules = [module for module, _ in runner.calls]
    assert modules == [
        *["distil.train", "distil.evaluate", "distil.evaluate", "distil.finetune"] * 2,
        "distil.finetune",
    ]
    train_no_kl = runner.calls[4][1]
    assert train_no_kl == ["experiment=demo", "logger=csv", "distill.alpha_kl=0", f"hydra.run.dir={tmp_path / 'no_kl'}"]
    evaluate = runner.calls[1][1]
    assert evaluate[:3] == [
        f"student_model={tmp_path / 'full' / 'student'}",
        "teacher_model=/models/teacher",
        "data=unseen_text",
    ]
    assert runner.calls[-1][1][:2] == ["model=/models/teacher", "task=sst2"]
    assert results["variants"]["no_kl"]["overrides"] == ["distill.alpha_kl=0"]

    again = RecordingRunner(tmp_path)
    assert run_ablation(ablation_config(), tmp_path, again) == results
    assert again.calls == []  # every report exists: nothing runs again


def test_every_variant_trains_from_the_one_teacher_cache(tmp_path):
    cfg = ablation_config()
    with open_dict(cfg):
        cfg.teacher_cache = "/caches/k32"
    runner = RecordingRunner(tmp_path)
    run_ablation(cfg, tmp_path, runner)
    trained = [arguments for module, arguments in runner.calls if module == "distil.train"]
    assert [arguments[2] for arguments in trained] == ["distill.teacher_cache=/caches/k32"] * 2
    assert trained[1][3] == "distill.alpha_kl=0"  # the variant's own overrides after the cache's


def test_the_table_has_each_quantity_for_the_teacher_and_every_variant(tmp_path):
    header, rows = ablation_rows(run_ablation(ablation_config(), tmp_path, RecordingRunner(tmp_path)))
    assert header == ["", "teacher", "full", "no_kl"]
    table = {row[0]: row[1:] for row in rows}
    assert table["unseen_text: masked-LM accuracy (%)"] == ("25.00", "24.00", "20.00")
    assert table["unseen_text: student / teacher"] == ("", "96.0%", "80.0%")
    assert table["demo: student / teacher"] == ("", "96.0%", "80.0%")  # 0.48 / 0.50, 0.40 / 0.50
    assert table["demo: top-1 agreement (%)"] == ("", "74.00", "70.00")
    assert table["demo: perplexity"] == ("10.00", "17.60", "18.00")
    assert table["sst2 dev accuracy (%)"] == ("80.00", "78.00", "70.00")
    assert table["sst2: student / teacher"] == ("", "97.5%", "87.5%")


@pytest.mark.parametrize(
    ("variants", "message"),
    [({}, "variants is empty"), ({"teacher": []}, "variants.teacher: the name"), ({"full": "x"}, "give a list")],
)
def test_bad_variants_are_refused_before_anything_runs(tmp_path, variants, message):
    runner = RecordingRunner(tmp_path)
    with pytest.raises(ValueError, match=message):
        run_ablation(ablation_config(variants), tmp_path, runner)
    assert runner.calls == []


def test_a_causal_ablation_without_fine_tuning_tables_next_token_scores(tmp_path):
    cfg = compose_config("ablation", "table=divergences")
    with open_dict(cfg):
        cfg.variants = {"full": [], "no_kl": ["distill.alpha_kl=0"]}
    runner = RecordingRunner(tmp_path, prediction="next_token")
    header, rows = ablation_rows(run_ablation(cfg, tmp_path, runner))
    assert [module for module, _ in runner.calls] == ["distil.train", "distil.evaluate", "distil.evaluate"] * 2
    table = {row[0]: row[1:] for row in rows}
    assert table["unseen_text_causal: next-token accuracy (%)"] == ("25.00", "24.00", "20.00")
    assert not any("sst2" in label for label in table)


TABLES = sorted(path.stem for path in (CONF_DIR / "table").glob("*.yaml"))


@pytest.mark.shared
@pytest.mark.parametrize("table", TABLES)
def test_every_variant_of_every_table_passes_the_run_checks_on_its_teacher(table):
    """Each variant's distil.train command (the table's overrides + its own) composes and passes the checks a run
    makes before any weights load, against the shared teacher it names."""
    cfg = compose_config("ablation", f"table={table}")
    for overrides in cfg.variants.values():
        run = compose_config("train", *cfg.train_overrides, *overrides)
        teacher = Path(run.teacher.name_or_path)
        if not teacher.is_dir():
            pytest.skip(f"shared teacher not found at {teacher} (set DISTIL_SHARED)")
        check_distill_config(run)
        check_student_config(run, load_teacher_config(str(teacher)))


def test_a_command_appends_to_its_log_so_an_earlier_attempts_output_is_kept(tmp_path):
    log_file = tmp_path / "variant" / "train.out"
    log_file.parent.mkdir()
    log_file.write_text("the first attempt's output\n")
    with pytest.raises(RuntimeError, match=r"json.tool --no-such-option failed with exit code 2; see .*train.out"):
        run_module("json.tool", ["--no-such-option"], log_file)
    text = log_file.read_text()
    assert text.startswith("the first attempt's output\n$ ") and "json.tool --no-such-option\n" in text
    assert "unrecognized arguments: --no-such-option" in text
