"""`distil.evaluate`: the report of a tiny teacher and student (sizes, held-out scores, speed) and its errors."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from distil import evaluate as evaluate_module
from distil.evaluate import evaluate
from distil.evaluation.report import report_rows
from distil.evaluation.speed import timed_forward
from distil.evaluation.tables import format_comparison
from distil.modules.student import build_student
from distil.run.devices import present_devices
from tests.conftest import compose_config, tiny_data_overrides
from tests.model_fixtures import FAST_SPEED, save_with_tokenizer


def evaluate_config(tmp_path, student, teacher, corpus_dir, *extra):
    return compose_config(
        "evaluate",
        f"student_model={student}",
        f"teacher_model={teacher}",
        f"report={tmp_path}/report.json",
        *tiny_data_overrides(corpus_dir),
        *FAST_SPEED,
        *extra,
    )


def masked_tokens_of(cfg) -> int:
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    return sum(int((batch["labels"] != -100).sum()) for batch in datamodule.val_dataloader())


def test_report_numbers_of_a_tiny_teacher_and_student(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    student_dir = save_with_tokenizer(build_student(teacher, num_layers=2), tmp_path / "student")
    student = AutoModelForMaskedLM.from_pretrained(student_dir)
    cfg = evaluate_config(tmp_path, student_dir, tiny_teacher_dir, tiny_corpus_dir)
    report = evaluate(cfg)

    assert report["teacher"]["parameters"] == sum(p.numel() for p in teacher.parameters())
    assert report["student"]["parameters"] == sum(p.numel() for p in student.parameters())
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert report["teacher"]["disk_bytes"] == (tiny_teacher_dir / "model.safetensors").stat().st_size
    assert report["student"]["disk_bytes"] == (student_dir / "model.safetensors").stat().st_size
    per_parameter = report["student"]["disk_bytes"] / report["student"]["parameters"]
    assert report["student"]["disk_bytes_per_parameter"] == per_parameter
    assert 4.0 < per_parameter < 4.5  # float32, plus the file header (large next to 20k parameters)
    assert report["masked_tokens"] == masked_tokens_of(cfg) > 0  # the whole validation split, both models
    for name in ("teacher", "student"):
        entry = report[name]
        assert 0.0 <= entry["mlm_acc"] <= 1.0
        assert entry["ppl"] == pytest.approx(math.exp(entry["mlm_loss"]), rel=1e-5)
        assert entry["cpu_latency_ms"] > 0 and entry["cpu_throughput_seq_per_s"] > 0
    pct = report["student_pct_of_teacher"]
    assert pct["parameters"] == pytest.approx(100 * report["student"]["parameters"] / report["teacher"]["parameters"])
    assert pct["ppl"] == pytest.approx(100 * report["student"]["ppl"] / report["teacher"]["ppl"])
    speedup = report["speedup"]["cpu"]
    latency = report["teacher"]["cpu_latency_ms"] / report["student"]["cpu_latency_ms"]
    assert speedup["latency"] == pytest.approx(latency)
    assert speedup["throughput"] == pytest.approx(
        report["student"]["cpu_throughput_seq_per_s"] / report["teacher"]["cpu_throughput_seq_per_s"]
    )
    if not torch.cuda.is_available():
        assert set(report["speedup"]) == {"cpu"}
    assert 0.0 <= report["top1_agreement"] <= 1.0


def test_a_student_equal_to_its_teacher_scores_100_percent(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    clone_dir = save_with_tokenizer(build_student(teacher, num_layers=4, layer_map=range(4)), tmp_path / "clone")
    report = evaluate(evaluate_config(tmp_path, clone_dir, tiny_teacher_dir, tiny_corpus_dir, "max_batches=1"))
    assert report["top1_agreement"] == 1.0
    assert report["student_pct_of_teacher"]["mlm_loss"] == pytest.approx(100.0, abs=1e-3)
    assert report["masked_tokens"] < masked_tokens_of(
        evaluate_config(tmp_path, clone_dir, tiny_teacher_dir, tiny_corpus_dir)
    )  # max_batches=1 of 2


def test_cli_on_a_training_run_writes_report_and_prints_the_table(evaluated_tiny_run):
    run_dir, result = evaluated_tiny_run
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report["student"]["path"] == str(run_dir / "evaluate" / "exported" / "student_model")  # .ckpt exported
    table = format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher"))
    assert table in result.stdout
    for label in (
        "parameters (M)",
        "weights on disk (MB)",
        "masked-LM accuracy (%)",
        "perplexity",
        "CPU latency, batch 1 x 16 (ms)",
        "CPU throughput, batch 4 x 16 (seq/s)",
        "CPU speed-up",
    ):
        assert label in table


def test_table_layout():
    table = format_comparison(
        [("a", "1.00", "2.00", "200.0%"), ("long label", "10.5", "3", "")],
        ("", "teacher", "student", "student/teacher"),
    )
    assert table.splitlines() == [
        "            teacher  student  student/teacher",
        "---------------------------------------------",
        "a              1.00     2.00           200.0%",
        "long label     10.5        3                 ",
    ]


def test_bad_inputs_fail_before_any_scoring(tmp_path, tiny_teacher_dir, tiny_corpus_dir):
    with pytest.raises(FileNotFoundError, match="student_model='/nonexistent/student'"):
        evaluate(evaluate_config(tmp_path, "/nonexistent/student", tiny_teacher_dir, tiny_corpus_dir))
    classifier_dir = save_with_tokenizer(
        AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, num_labels=2), tmp_path / "classifier"
    )
    with pytest.raises(ValueError, match="student_model='.*classifier' has no masked-LM head"):
        evaluate(evaluate_config(tmp_path, classifier_dir, tiny_teacher_dir, tiny_corpus_dir))
    with pytest.raises(ValueError, match=r"speed.devices has \['tpu'\]"):
        evaluate(evaluate_config(tmp_path, tiny_teacher_dir, tiny_teacher_dir, tiny_corpus_dir, "speed.devices=[tpu]"))
    with pytest.raises(ValueError, match="device='tpu' is not allowed"):
        evaluate(evaluate_config(tmp_path, tiny_teacher_dir, tiny_teacher_dir, tiny_corpus_dir, "device=tpu"))


def test_a_teacher_folder_without_tokenizer_files_is_named_before_scoring(
    tmp_path, tiny_teacher_dir, tiny_corpus_dir, model_without_tokenizer_dir, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the tokenizer was checked")

    monkeypatch.setattr(evaluate_module, "load_language_model", refuse)
    cfg = evaluate_config(tmp_path, tiny_teacher_dir, model_without_tokenizer_dir, tiny_corpus_dir)
    with pytest.raises(ValueError, match=f"data.tokenizer='{model_without_tokenizer_dir}' has no tokenizer files"):
        evaluate(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without a GPU")
def test_cuda_timing_is_dropped_without_a_gpu():
    assert present_devices(["cpu", "cuda"], "speed.devices") == [torch.device("cpu")]


def test_timed_forward_is_the_encoder_unless_the_head_is_asked_for(fresh_teacher_dir):
    model = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir).eval()
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        assert timed_forward(model, with_mlm_head=False)(ids, torch.ones_like(ids)).shape == (1, 4, 32)  # hidden
        assert timed_forward(model, with_mlm_head=True)(ids, torch.ones_like(ids)).shape == (1, 4, 128)  # vocab


@pytest.mark.shared
def test_shared_teacher_against_a_six_layer_student(tmp_path, shared_dir):
    teacher_dir = shared_dir / "models" / "bert-teacher-12x256"
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir, dtype=torch.float32)
    student_dir = tmp_path / "student"
    build_student(teacher, num_layers=6).save_pretrained(student_dir)
    (student_dir / "tokenizer.json").write_bytes((teacher_dir / "tokenizer.json").read_bytes())
    (student_dir / "tokenizer_config.json").write_bytes((teacher_dir / "tokenizer_config.json").read_bytes())
    cfg = compose_config(
        "evaluate",
        f"student_model={student_dir}",
        f"teacher_model={teacher_dir}",
        f"report={tmp_path}/report.json",
        "data.val_documents=5",
        "data.num_workers=0",
        "max_batches=1",
        "data.val_batch_size=8",
        *FAST_SPEED,
    )
    report = evaluate(cfg)
    assert report["teacher"]["parameters"] == 17_519_674  # the shared teacher's README / pretrain_report.json
    assert (
        report["student"]["parameters"]
        == 17_519_674 - 6 * (4 * (256 * 256 + 256) + 2 * 256 * 1024 + 1024 + 256 + 4 * 256) - 2 * 256
    )  # 6 layers, no token types
    assert report["teacher"]["disk_bytes"] == pytest.approx(2 * 17_519_674, rel=0.01)  # stored as float16
    assert 0.30 < report["teacher"]["mlm_acc"] < 0.60  # about 43% held-out accuracy per its pretraining report
    assert report["student"]["mlm_acc"] < report["teacher"]["mlm_acc"]  # an undistilled half-depth copy is worse
