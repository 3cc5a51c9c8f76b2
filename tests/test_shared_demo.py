"""The README's commands on the shared teacher, as a newcomer runs them after the install: the demo (2 steps here),
the export of the demo's own student with ONNX and INT8, and `distil.evaluate` on that export.

The shared teacher's BERT tokenizer returns token types and its weights are stored in float16, two things the tiny
test models do not show: the DistilBERT student takes no token types (its graph must not either), and it is saved in
float16 like its teacher (so its size on disk compares with the teacher's).
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForMaskedLM

from distil.evaluate import evaluate
from distil.exporting.onnx_model import graph_input_names
from tests.conftest import compose_config, run_cli, shared_assets_dir
from tests.model_fixtures import FAST_SPEED

pytestmark = pytest.mark.shared
SMALL_DATA = ["data.val_documents=5", "data.val_batch_size=8", "data.num_workers=0"]  # a few held-out rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo (`python -m distil.train`) for 2 steps of 4 rows on the shared assets: its run directory."""
    shared_dir = shared_assets_dir()
    if not (shared_dir / "models" / "bert-teacher-12x256").is_dir():
        pytest.skip(f"shared assets not found at {shared_dir} (set DISTIL_SHARED)")
    home = tmp_path_factory.mktemp("demo")
    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    overrides += ["data.batch_size=4", "data.val_batch_size=4", "logger=csv", f"paths.shared_dir={shared_dir}"]
    result = run_cli(home, f"hydra.run.dir={home / 'run'}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "run"


def test_the_demo_writes_a_six_layer_student_stored_like_its_teacher(demo_run):
    student = AutoModelForMaskedLM.from_pretrained(demo_run / "student")
    assert student.config.n_layers == 6 and student.config.dim == 256 and student.config.vocab_size == 30522
    parameters = sum(p.numel() for p in student.parameters())
    assert (demo_run / "student" / "model.safetensors").stat().st_size == pytest.approx(2 * parameters, rel=0.01)


def test_the_export_commands_write_onnx_and_int8_files_of_the_demo_student_and_evaluate_scores_them(demo_run, tmp_path):
    out = tmp_path / "exported"
    result = run_cli(  # the README's `onnx=true int8=true` command, which writes and checks onnx=true's files first
        tmp_path,
        f"ckpt={demo_run}/checkpoints/last.ckpt",
        f"out={out}",
        "onnx=true",
        "int8=true",
        "quantization.max_batches=1",
        "quantization.calibration_rows=8",
        "quantization.max_drop_points=100",  # a 2-step student: the files and the gate's table are what is tested
        f"paths.shared_dir={shared_assets_dir()}",
        *SMALL_DATA,
        module="distil.export",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |onnx - pytorch| logit difference" in result.stdout and "int8 onnx_static" in result.stdout
    for name in ("model.onnx", "model.int8-dynamic.onnx", "model.int8-static.onnx"):
        assert graph_input_names(out / name) == ["input_ids", "attention_mask"]  # the tokenizer also gives types
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"

    teacher = shared_assets_dir() / "models" / "bert-teacher-12x256"
    cfg = compose_config(
        "evaluate",
        f"student_model={out}",
        f"teacher_model={teacher}",
        f"report={tmp_path}/report.json",
        "max_batches=1",
        *SMALL_DATA,
        *FAST_SPEED,
    )
    report = evaluate(cfg)
    assert sorted(report["exported"]) == ["onnx_dynamic", "onnx_float", "onnx_static", "torch_dynamic"]
    assert report["exported"]["onnx_float"]["top1_agreement"] == pytest.approx(1.0, abs=0.01)
    assert report["student"]["disk_bytes_per_parameter"] == pytest.approx(2.0, rel=0.01)  # as the teacher's
    assert report["student_pct_of_teacher"]["disk_bytes"] == pytest.approx(
        report["student_pct_of_teacher"]["parameters"], rel=0.01
    )


def test_the_comparison_command_fine_tunes_teacher_student_and_distilled_student_on_shared_sst2(demo_run, tmp_path):
    """The README's `distil.finetune_comparison task=sst2` on the shared teacher, SST-2 files and the demo's student
    (a few sentences, one seed: the command's path on real shapes, not its scores)."""
    teacher = shared_assets_dir() / "models" / "bert-teacher-12x256"
    result = run_cli(
        tmp_path,
        "task=sst2",
        f"teacher_model={teacher}",
        f"student_model={demo_run}/student",
        "seeds=[1]",
        "max_train_examples=32",
        "max_dev_examples=16",
        "batch_size=16",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'comparison'}",
        f"paths.shared_dir={shared_assets_dir()}",
        module="distil.finetune_comparison",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    assert report["task"] == "sst2" and report["train_examples"] == 32
    for name in ("teacher", "student", "distilled"):
        assert 0 <= report["runs"][name][0]["model"]["dev"]["accuracy"] <= 1, name
