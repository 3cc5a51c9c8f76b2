"""`distil.finetune ... save_model=true int8=true` (`distil.tasks.int8`): the fine-tuned model's INT8 variants, scored
with the task's own metric and gated on its drop.

The gate's numbers are checked on a tiny classifier built so that its INT8 accuracy is known in advance: its head
ignores the encoder (pre-classifier weights 0) and predicts class 0 by a margin of 10 logits, from one constant
feature. On the first 5 dev rows (labels 0 1 0 1 0) its float accuracy is 60%. `with_outlier` adds one 1e4 weight to
the classifier, on a feature that is always 0: the float model does not change, but a per-tensor int8 scale of
1e4 / 127 (ONNX Runtime's dynamic quantization, PyTorch's) rounds the weight of 10 to 0, so the int8 model predicts
class 1 (its bias) and scores 40%: a drop of 20 points. Static quantization scales the weights per output channel
(class), so it keeps the 10 and every prediction.
"""

import importlib.util
import json

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distil.exporting.int8_files import VARIANT_FILES
from distil.exporting.int8_gate import QualityGateError, check_gate, format_gate
from distil.exporting.onnx_model import cpu_session
from distil.exporting.task_int8 import TaskInt8Settings, write_task_int8
from distil.tasks.batches import Collator
from distil.tasks.classification import SequenceClassificationTask
from distil.tasks.finetuning import finetune_and_report
from tests.conftest import compose_config
from tests.tasks.test_finetuning import QUICK

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
pytestmark = pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install -e .[onnx])")

CONSTANT, ZEROED = 0, 1  # pre-classifier features: a constant 1 (after ReLU), and one that is always 0
DEV_ROWS = 5  # labels 0 1 0 1 0: a model that always says 0 scores 60%, one that always says 1 scores 40%


def one_class_classifier(student_dir, with_outlier: bool, **head_config):
    model = AutoModelForSequenceClassification.from_pretrained(student_dir, **head_config).eval()
    with torch.no_grad():
        model.pre_classifier.weight.zero_()
        model.pre_classifier.bias.zero_()
        model.pre_classifier.bias[CONSTANT] = 1.0
        model.classifier.weight.zero_()
        model.classifier.weight[0, CONSTANT] = 10.0  # class 0: logit 10
        model.classifier.bias.copy_(torch.tensor([0.0, 1.0]))  # class 1: logit 1, the argmax once the 10 is gone
        if with_outlier:
            model.classifier.weight[1, ZEROED] = 1e4
    return model


def write_int8(tmp_path, sentiment_task_dir, student_dir, with_outlier: bool, max_drop_points=1.0) -> dict:
    cfg = compose_config("finetune", "task=sst2", f"task.source={sentiment_task_dir}", "model=unused")
    task = instantiate(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    dev = task.encode(task.examples("dev")[:DEV_ROWS], tokenizer, training=False)
    train = task.encode(task.examples("train")[:16], tokenizer, training=True)
    assert dev.scoring.tolist() == [0, 1, 0, 1, 0]
    collate = Collator(tokenizer.pad_token_id, tokenizer.padding_side, task.per_token)
    settings = TaskInt8Settings(list(VARIANT_FILES), max_drop_points, 8, 18)
    model = one_class_classifier(student_dir, with_outlier, **task.head_config())
    return write_task_int8(model, task, dev, train.features, collate, 2, tmp_path, settings)


def test_the_gate_passes_a_classifier_that_keeps_its_accuracy_and_its_files_run(
    tmp_path, sentiment_task_dir, fresh_student_dir
):
    report = write_int8(tmp_path, sentiment_task_dir, fresh_student_dir, with_outlier=False)
    assert report["metric"] == "accuracy" and report["dev_features"] == DEV_ROWS
    assert report["float"]["accuracy"] == pytest.approx(0.6)
    assert list(report["int8"]) == list(VARIANT_FILES)
    for entry in report["int8"].values():
        assert entry["accuracy"] == pytest.approx(0.6) and entry["drop_points"] == pytest.approx(0.0, abs=1e-9)
        assert entry["passed"] is True
    check_gate(report)  # passes: no exception
    assert json.loads((tmp_path / "quantization.json").read_text()) == report
    float_bytes = (tmp_path / "model.onnx").stat().st_size + (tmp_path / "model.onnx.data").stat().st_size
    assert report["float"]["size_bytes"] == float_bytes
    batch = {"input_ids": torch.randint(5, 100, (3, 9)).numpy(), "attention_mask": torch.ones(3, 9).long().numpy()}
    for variant in ("onnx_dynamic", "onnx_static"):
        entry = report["int8"][variant]
        assert entry["size_bytes"] == (tmp_path / entry["file"]).stat().st_size < float_bytes
        logits = cpu_session(tmp_path / entry["file"]).run(["logits"], batch)[0]
        assert logits.shape == (3, 2) and (logits.argmax(-1) == 0).all()
    table = format_gate(report)
    assert "dev accuracy (x100)" in table and "top-1" not in table and "5 dev features of task sst2" in table


def test_the_gate_fails_naming_both_numbers(tmp_path, sentiment_task_dir, fresh_student_dir):
    report = write_int8(tmp_path, sentiment_task_dir, fresh_student_dir, with_outlier=True)
    assert report["float"]["accuracy"] == pytest.approx(0.6)
    for variant in ("onnx_dynamic", "torch_dynamic"):
        assert report["int8"][variant]["accuracy"] == pytest.approx(0.4)
        assert report["int8"][variant]["drop_points"] == pytest.approx(20.0)
    assert report["int8"]["onnx_static"]["accuracy"] == pytest.approx(0.6)  # per-channel weight scales
    assert [e["passed"] for e in report["int8"].values()] == [False, True, False]
    assert report["int8"]["onnx_dynamic"]["file"] is None  # the failing file is removed, the passing one kept
    assert sorted(p.name for p in tmp_path.glob("*.int8-*.onnx")) == [VARIANT_FILES["onnx_static"]]
    assert "file removed" in format_gate(report)
    message = (
        r"task sst2's dev accuracy dropped by more than quantization.max_drop_points=1.0: "
        r"onnx_dynamic: 40.00% vs float 60.00% \(drop 20.00 points\); "
        r"torch_dynamic: 40.00% vs float 60.00% \(drop 20.00 points\)$"
    )
    with pytest.raises(QualityGateError, match=message):
        check_gate(report)


def int8_finetune_config(out_dir, task_dir, model_dir, *overrides: str):
    """The config of `distil.finetune task=sst2 ... save_model=true int8=true` on the tiny sentiment task."""
    task = ["task=sst2", f"task.source={task_dir}", f"model={model_dir}"]
    return compose_config("finetune", f"out_dir={out_dir}", *task, "save_model=true", "int8=true", *overrides)


def test_finetune_int8_saves_the_variants_beside_the_model_scored_like_fine_tuning(
    tmp_path, sentiment_task_dir, fresh_student_dir, capsys
):
    out_dir = tmp_path / "run"
    cfg = int8_finetune_config(
        out_dir,
        sentiment_task_dir,
        fresh_student_dir,
        "quantization.variants=[onnx_dynamic,torch_dynamic]",
        "quantization.max_drop_points=100",
        *QUICK,
        "trainer.max_epochs=2",
    )
    report, path = finetune_and_report(cfg)
    quantization = json.loads((out_dir / "model" / "quantization.json").read_text())
    assert report["int8"] == quantization == json.loads(path.read_text())["int8"]
    assert quantization["float"]["accuracy"] == pytest.approx(report["model"]["dev"]["accuracy"])  # same score
    assert quantization["dev_features"] == 16 and quantization["calibration_rows"] is None
    for variant, entry in quantization["int8"].items():
        drop = 100 * (quantization["float"]["accuracy"] - entry["accuracy"])
        assert entry["drop_points"] == pytest.approx(drop) and entry["passed"] is True
    files = {p.name for p in (out_dir / "model").iterdir()}
    assert {"model.safetensors", "model.onnx", "model.int8-dynamic.onnx", "quantization.json"} <= files
    assert "model.int8-static.onnx" not in files
    printed = capsys.readouterr().out
    assert "int8 onnx_dynamic (model.int8-dynamic.onnx)" in printed and "gate: a drop of at most 100 points" in printed


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["int8=true"], r"int8=true quantizes the saved model: add save_model=true"),
        (
            ["save_model=true", "int8=true", "quantization.variants=[onnx_dynamic,fp8]"],
            r"quantization.variants=\['onnx_dynamic', 'fp8'\] is not allowed: give distinct variants among",
        ),
        (
            ["save_model=true", "int8=true", "quantization.max_drop_points=-1"],
            r"quantization.max_drop_points=-1 is not allowed: .* >= 0",
        ),
    ],
)
def test_bad_int8_input_is_named_before_any_work(tmp_path, overrides, error):
    cfg = compose_config("finetune", f"out_dir={tmp_path}", "model=/nonexistent/model", *overrides)
    with pytest.raises(ValueError, match=error):
        finetune_and_report(cfg)  # the model path is not even read
    assert list(tmp_path.iterdir()) == []


def test_finetune_int8_fails_naming_both_numbers_and_keeps_the_saved_model(
    tmp_path, sentiment_task_dir, fresh_student_dir, monkeypatch
):
    class OutlierClassifier:  # the task's model class, loading the outlier classifier (learning_rate=0 keeps it)
        @staticmethod
        def from_pretrained(path, **kwargs):
            return one_class_classifier(path, True, **{k: v for k, v in kwargs.items() if k != "dtype"})

    monkeypatch.setattr(SequenceClassificationTask, "model_class", OutlierClassifier)
    out_dir = tmp_path / "run"
    cfg = int8_finetune_config(
        out_dir,
        sentiment_task_dir,
        fresh_student_dir,
        f"max_dev_examples={DEV_ROWS}",
        "learning_rate=0",
        "trainer.max_epochs=1",
        "+trainer.enable_progress_bar=false",
    )
    message = r"accuracy dropped by .*=1.0: onnx_dynamic: 40.00% .*; torch_dynamic: 40.00% vs float 60.00% .*points\)$"
    with pytest.raises(QualityGateError, match=message):
        finetune_and_report(cfg)
    report = json.loads((out_dir / "finetune.json").read_text())
    assert report["model"]["dev"]["accuracy"] == pytest.approx(0.6)
    assert report["int8"] == json.loads((out_dir / "model" / "quantization.json").read_text())
    assert [e["passed"] for e in report["int8"]["int8"].values()] == [False, True, False]
    assert (out_dir / "model" / "model.safetensors").is_file()  # the float model is kept, with the passing variant
    assert sorted(p.name for p in (out_dir / "model").glob("*.onnx")) == ["model.int8-static.onnx", "model.onnx"]
