"""`python -m distil.train teacher.name_or_path=<tiny teacher>` for the RoBERTa and ModernBERT families: the
student it exports is of the teacher's family at half depth and works in `transformers`; `distil.evaluate`, the ONNX
export and exact resume work on a RoBERTa student. (BERT runs are tested throughout the rest of the suite.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from distil.evaluate import evaluate
from distil.export import export_checkpoint
from tests.conftest import assert_fill_mask_is_the_models_own, compose_config, tiny_data_overrides
from tests.model_fixtures import FAST_SPEED
from tests.reliability.runs import MAX_STEPS, run_in_dir, start_in_dir, tiny_overrides, train_losses
from tests.tiny_assets import write_tiny_teacher

TEACHER_LAYERS = {"roberta": 4, "modernbert": 6}  # ModernBERT: global, local, local, global, ...; XLM-R is the
# RoBERTa family's code path with another tokenizer (covered by tests/families/test_families.py and the data tests)


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, tiny_corpus_dir) -> dict[str, tuple[Path, Path]]:
    """model_type -> (teacher dir, run dir) of finished MAX_STEPS-step runs on the tiny corpus (checkpoint every 4
    steps), one per family, run side by side: most of each run is the start of a Python process."""
    runs, processes = {}, {}
    for model_type, layers in TEACHER_LAYERS.items():
        teacher_dir = write_tiny_teacher(tmp_path_factory.mktemp(model_type), model_type, layers)
        run_dir = tmp_path_factory.mktemp(f"{model_type}_run") / "run"
        runs[model_type] = teacher_dir, run_dir
        log_file = run_dir.parent / "console.txt"
        processes[model_type] = start_in_dir(run_dir, tiny_overrides(teacher_dir, tiny_corpus_dir), log_file), log_file
    for model_type, (process, log_file) in processes.items():
        assert process.wait(timeout=300) == 0, f"{model_type}: {log_file.read_text()[-3000:]}"
    return runs


@pytest.fixture(params=sorted(TEACHER_LAYERS))
def family_run(request, family_runs) -> tuple[str, Path, Path]:
    """(model_type, teacher dir, run dir) of one family's run."""
    return request.param, *family_runs[request.param]


def test_the_student_is_of_the_teachers_family_at_half_depth_and_fills_masks(family_run):
    model_type, teacher_dir, run_dir = family_run
    student, info = AutoModelForMaskedLM.from_pretrained(run_dir / "student", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    assert student.config.model_type == teacher_config.model_type == model_type
    assert student.config.num_hidden_layers == teacher_config.num_hidden_layers // 2
    if model_type == "modernbert":  # each student layer keeps its teacher layer's attention
        kinds = [teacher_config.layer_types[i] for i in student.config.distil_layer_map]
        assert student.config.layer_types == kinds == ["full_attention", "sliding_attention", "sliding_attention"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][f"student.{name}"]), name
    assert_fill_mask_is_the_models_own(run_dir / "student", "the king opened the {mask}.")


@pytest.mark.parametrize("family_run", ["roberta"], indirect=True)
def test_a_roberta_run_resumed_from_its_step_8_checkpoint_logs_the_same_losses(family_run, tmp_path, tiny_corpus_dir):
    _, teacher_dir, run_dir = family_run
    checkpoint = tmp_path / "step8.ckpt"
    shutil.copy(run_dir / "checkpoints" / "step0000008.ckpt", checkpoint)

    result = run_in_dir(
        tmp_path / "resumed", [*tiny_overrides(teacher_dir, tiny_corpus_dir), f"ckpt_path={checkpoint}"]
    )

    assert result.returncode == 0, result.stderr[-3000:]
    expected, resumed = train_losses(run_dir), train_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(8, MAX_STEPS))
    assert [resumed[step] for step in range(8, MAX_STEPS)] == [expected[step] for step in range(8, MAX_STEPS)]


@pytest.mark.parametrize("family_run", ["roberta"], indirect=True)
def test_evaluate_and_the_onnx_export_work_on_a_roberta_student(family_run, tmp_path, tiny_corpus_dir):
    _, teacher_dir, run_dir = family_run
    cfg = compose_config(
        "evaluate",
        f"student_model={run_dir}/checkpoints/last.ckpt",
        f"teacher_model={teacher_dir}",
        f"report={tmp_path}/report.json",
        *tiny_data_overrides(tiny_corpus_dir),
        *FAST_SPEED,
    )
    report = evaluate(cfg)
    student = AutoModelForMaskedLM.from_pretrained(run_dir / "student")
    assert report["student"]["parameters"] == sum(p.numel() for p in student.parameters())
    assert report["masked_tokens"] > 0 and 0.0 <= report["student"]["mlm_acc"] <= 1.0
    assert 0.0 <= report["top1_agreement"] <= 1.0

    difference = export_checkpoint(run_dir / "checkpoints" / "last.ckpt", tmp_path / "onnx_export", onnx_opset=18)
    assert difference < 1e-4 and (tmp_path / "onnx_export" / "model.onnx").is_file()
