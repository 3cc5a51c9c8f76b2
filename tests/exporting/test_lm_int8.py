"""INT8 export (`distil.export ... onnx=true int8=true`, `distil.quantization`) and its quality gate, and the INT8 rows
of `distil.evaluate`, on a tiny student built so that its INT8 accuracy is known in advance.

The student predicts one token (the most frequent masked token of the held-out rows) at every position by a wide
margin: one feature of its head's LayerNorm is a constant 10 and only that token's embedding row reads it. So its
float accuracy is that token's share of the masked tokens, and INT8 keeps every prediction (drop 0, agreement 100%).
`with_outlier` adds a single 1e4 entry to the (tied) embedding table, on a feature that the head zeroes: the float
model does not change, but a per-tensor int8 scale of 1e4 / 127 rounds that token's 10 to 0, so the INT8 model loses
the prediction (a bias row favours an unused token instead) and its accuracy drops to 0.
"""

import importlib.util
import json
import shutil
from collections import Counter

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForMaskedLM

from distil.evaluation.scoring import held_out_batches
from distil.export import export_checkpoint
from distil.exporting.int8_files import VARIANT_FILES
from distil.exporting.int8_gate import QualityGateError, check_gate, check_int8_settings, format_gate
from distil.exporting.lm_int8 import Int8Settings
from distil.exporting.onnx_model import cpu_session, graph_input_names
from tests.conftest import compose_config, tiny_data_overrides, tiny_masked_lm
from tests.model_fixtures import FAST_SPEED, checkpoint_like_training
from tests.tiny_assets import VOCAB_SIZE

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
pytestmark = pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install -e .[onnx])")

CONSTANT, ZEROED = 0, 1  # head features: a constant 10, and one that is always 0
# 512 x 32 embeddings: more than the 8192 elements under which the ONNX exporter folds the transposed output
# projection into a second table (real vocabularies are far above); the tokenizer uses the first 128 rows.
TABLE_ROWS = 512
UNUSED_TOKEN = TABLE_ROWS - 1  # a row no token id reaches: the INT8 model's prediction after the outlier


def export_data_config(corpus_dir):
    return compose_config("export", "ckpt=unused", "out=unused", *tiny_data_overrides(corpus_dir)).data


def held_out_labels(corpus_dir, tokenizer_dir) -> torch.Tensor:
    """The masked tokens of the held-out batches that the export scores (its data config, the tiny corpus)."""
    datamodule = instantiate(export_data_config(corpus_dir), tokenizer=str(tokenizer_dir))
    labels = torch.cat([batch["labels"].flatten() for batch in held_out_batches(datamodule, None)])
    return labels[labels != -100]


def one_token_student(token: int, with_outlier: bool):
    """A 1-layer BERT that predicts `token` everywhere (see the module docstring)."""
    student = tiny_masked_lm("bert", num_layers=1, vocab_size=TABLE_ROWS)
    with torch.no_grad():
        norm, embeddings = student.cls.predictions.transform.LayerNorm, student.bert.embeddings.word_embeddings.weight
        norm.weight[[CONSTANT, ZEROED]] = 0.0
        norm.bias[CONSTANT], norm.bias[ZEROED] = 10.0, 0.0
        embeddings[token, CONSTANT] = 10.0  # logit of `token`: 100 above the others' (about 1)
        student.cls.predictions.decoder.bias.zero_()
        student.cls.predictions.decoder.bias[UNUSED_TOKEN] = 1.0  # the argmax once the embedding rows are gone
        if with_outlier:
            embeddings[UNUSED_TOKEN, ZEROED] = 1e4
    return student


def int8_settings(corpus_dir, variants=tuple(VARIANT_FILES), max_drop_points=1.0) -> Int8Settings:
    return Int8Settings(list(variants), max_drop_points, 8, None, export_data_config(corpus_dir))


@pytest.fixture(scope="module")
def one_token_case(tmp_path_factory, fresh_teacher_dir, tiny_corpus_dir) -> dict:
    """The most frequent held-out token, its share, and checkpoints of the two one-token students."""
    labels = held_out_labels(tiny_corpus_dir, fresh_teacher_dir)
    token, count = Counter(labels.tolist()).most_common(1)[0]
    directory = tmp_path_factory.mktemp("one_token")
    case = {"token": token, "share": count / len(labels), "masked_tokens": len(labels)}
    for name, outlier in (("plain", False), ("outlier", True)):
        case[name] = directory / f"{name}.ckpt"
        student = one_token_student(token, outlier)
        torch.save(checkpoint_like_training(student, fresh_teacher_dir), case[name])
    return case


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, one_token_case, tiny_corpus_dir):
    """(folder, quantization.json) of the plain one-token student exported with every INT8 variant."""
    out = tmp_path_factory.mktemp("int8") / "export"
    export_checkpoint(one_token_case["plain"], out, onnx_opset=18, int8=int8_settings(tiny_corpus_dir))
    return out, json.loads((out / "quantization.json").read_text())


def test_int8_files_load_and_run_and_keep_the_float_predictions(int8_export, one_token_case):
    """The student is a BERT and its tokenizer returns token types (as BERT's does), so its graphs take them: the
    calibration, the gate and `distil.evaluate` (below) fed them from batches of masked rows, which have none."""
    out, report = int8_export
    batch = {
        "input_ids": torch.randint(5, VOCAB_SIZE, (3, 9)).numpy(),
        "attention_mask": torch.ones(3, 9).long().numpy(),
        "token_type_ids": torch.zeros(3, 9).long().numpy(),
    }
    for variant in ("onnx_dynamic", "onnx_static"):
        assert graph_input_names(out / VARIANT_FILES[variant]) == ["input_ids", "attention_mask", "token_type_ids"]
        logits = cpu_session(out / VARIANT_FILES[variant]).run(["logits"], batch)[0]
        assert logits.shape == (3, 9, TABLE_ROWS)
        assert (logits.argmax(-1) == one_token_case["token"]).all()
    assert sorted(p.name for p in out.glob("*.onnx")) == [
        "model.int8-dynamic.onnx",
        "model.int8-static.onnx",
        "model.onnx",
    ]


def test_the_gate_passes_a_model_that_keeps_its_accuracy_and_sizes_match_the_files(int8_export, one_token_case):
    out, report = int8_export
    share = one_token_case["share"]
    assert report["masked_tokens"] == one_token_case["masked_tokens"]
    assert report["float"]["mlm_acc"] == pytest.approx(share)
    float_bytes = (out / "model.onnx").stat().st_size + (out / "model.onnx.data").stat().st_size
    assert report["float"]["size_bytes"] == float_bytes
    assert list(report["int8"]) == list(VARIANT_FILES)
    for variant, entry in report["int8"].items():
        assert entry["mlm_acc"] == pytest.approx(share) and entry["drop_points"] == pytest.approx(0.0, abs=1e-9)
        assert entry["top1_agreement"] == 1.0 and entry["passed"] is True
        if entry["file"] is not None:
            assert entry["size_bytes"] == (out / entry["file"]).stat().st_size  # one file, no external weights
            assert entry["size_pct_of_float"] == pytest.approx(100 * entry["size_bytes"] / float_bytes)
    check_gate(report)  # passes: no exception
    header, _, *rows, limit = format_gate(report).splitlines()
    assert header.split()[-3:] == ["float", "(%)", "gate"]  # the masked LM's gate shows the top-1 agreement
    assert [row.split()[-2:] for row in rows[1:]] == [["100.00", "pass"]] * len(VARIANT_FILES)
    assert limit == f"{one_token_case['masked_tokens']} held-out masked tokens; gate: a drop of at most 1.0 points"


def test_the_embedding_table_is_stored_once_in_8_bits(int8_export):
    import onnx

    out, _ = int8_export
    graph = onnx.load(str(out / "model.int8-dynamic.onnx")).graph
    tables = [i for i in graph.initializer if TABLE_ROWS in i.dims and len(i.dims) == 2]
    assert [list(t.dims) for t in tables] == [[TABLE_ROWS, 32]]  # no transposed copy for the output projection
    assert tables[0].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # Gather and tied projection


def test_the_gate_fails_naming_both_numbers_and_writes_nothing(tmp_path, one_token_case, tiny_corpus_dir):
    out = tmp_path / "export"
    export_checkpoint(one_token_case["plain"], out)  # an earlier export, kept by the failing one
    before = sorted(p.name for p in out.iterdir())
    drop = 100 * one_token_case["share"]  # the INT8 model predicts the unused token: accuracy 0
    settings = int8_settings(tiny_corpus_dir, ["onnx_dynamic", "torch_dynamic"], max_drop_points=drop - 0.5)
    float_words = f"{100 * one_token_case['share']:.2f}%"
    message = rf"max_drop_points={drop - 0.5}: onnx_dynamic: 0.00% vs float {float_words} \(drop {drop:.2f} points\)"
    with pytest.raises(QualityGateError, match=message + rf"; torch_dynamic: 0.00% vs float {float_words}"):
        export_checkpoint(one_token_case["outlier"], out, onnx_opset=18, int8=settings)
    assert sorted(p.name for p in out.iterdir()) == before


def test_bad_int8_settings_are_named_before_any_work(tmp_path, one_token_case, tiny_corpus_dir):
    with pytest.raises(ValueError, match=r"variants=\['onnx_dynamic', 'fp8'\] is not allowed: give distinct variants"):
        check_int8_settings(["onnx_dynamic", "fp8"], 1.0, 8)
    with pytest.raises(ValueError, match=r"max_drop_points=-0.5 is not allowed: .* >= 0"):
        check_int8_settings(["onnx_dynamic"], -0.5, 8)
    with pytest.raises(ValueError, match=r"calibration_rows=0 is not allowed"):
        check_int8_settings(["onnx_static"], 1.0, 0)
    with pytest.raises(ValueError, match="int8=true quantizes model.onnx: add onnx=true"):
        export_checkpoint(one_token_case["plain"], tmp_path / "out", int8=int8_settings(tiny_corpus_dir))
    assert not (tmp_path / "out").exists()


def test_evaluate_adds_the_int8_rows_of_the_export(int8_export, tiny_corpus_dir, tmp_path):
    from distil.evaluate import evaluate
    from distil.evaluation.report import exported_rows

    out, quantization = int8_export
    cfg = compose_config(
        "evaluate",
        f"student_model={out}",
        f"teacher_model={out}",  # the student as its own teacher: the INT8 rows are what is checked
        f"report={tmp_path}/report.json",
        *tiny_data_overrides(tiny_corpus_dir),
        *FAST_SPEED,
    )
    report = evaluate(cfg)
    assert list(report["exported"]) == ["onnx_float", *VARIANT_FILES]
    for name, entry in report["exported"].items():
        assert entry["mlm_acc"] == pytest.approx(quantization["float"]["mlm_acc"])  # same held-out masks
        assert entry["top1_agreement"] == 1.0
        assert entry["cpu_latency_ms"] > 0 and entry["cpu_throughput_seq_per_s"] > 0
        expected = quantization["float"] if name == "onnx_float" else quantization["int8"][name]
        assert entry["disk_bytes"] == expected["size_bytes"]
    assert report["exported"]["onnx_dynamic"]["timed_with_mlm_head"] is True
    assert report["exported"]["torch_dynamic"]["timed_with_mlm_head"] is False  # like the PyTorch rows (the default)
    rows = exported_rows(report)
    assert [row[0].split(" (")[0] for row in rows] == [
        "teacher fp32",
        "student fp32",
        "student fp32 ONNX",
        "student INT8 ONNX dynamic",
        "student INT8 ONNX static",
        "student INT8 PyTorch dynamic",
    ]


def test_evaluate_reads_only_the_variants_that_passed(int8_export, tmp_path):
    from transformers import AutoModelForMaskedLM

    from distil.exporting.lm_int8 import exported_models

    out, _ = int8_export
    folder = tmp_path / "export"
    shutil.copytree(out, folder)
    report = json.loads((folder / "quantization.json").read_text())
    report["int8"]["onnx_dynamic"].update(passed=False, file=None)  # as a failing gate leaves it: the file deleted
    (folder / "quantization.json").write_text(json.dumps(report))
    (folder / VARIANT_FILES["onnx_dynamic"]).unlink()
    models = exported_models(folder, AutoModelForMaskedLM.from_pretrained(folder), with_mlm_head=False)
    assert list(models) == ["onnx_float", "onnx_static", "torch_dynamic"]


def test_a_malformed_quantization_report_or_a_missing_onnx_extra_is_named(int8_export, tmp_path, monkeypatch):
    from distil.exporting import lm_int8, onnx_model

    out = tmp_path / "export"
    shutil.copytree(int8_export[0], out)
    student = AutoModelForMaskedLM.from_pretrained(out)
    (out / "quantization.json").write_text(json.dumps({"float": {}}))  # no int8 entries
    with pytest.raises(ValueError, match=f"{out / 'quantization.json'} is not a quantization report .*KeyError"):
        lm_int8.exported_models(out, student, with_mlm_head=True)
    real_find_spec = onnx_model.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_model.importlib.util, "find_spec", lambda n: None if n == "onnxruntime" else real_find_spec(n)
    )
    with pytest.raises(ImportError, match=r"the int8 export .* needs \['onnxruntime'\]: install the ONNX extra"):
        lm_int8.exported_models(out, student, with_mlm_head=True)
