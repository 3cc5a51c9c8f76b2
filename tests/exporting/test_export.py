"""`distil.export`: checkpoint -> Hugging Face directory (identical logits, fill-mask works) and ONNX (checked)."""

import importlib.util
import json
import shutil

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from distil.export import export_checkpoint
from distil.exporting.checkpoint_export import hf_model_path, read_checkpoint
from distil.exporting.onnx_model import cpu_session, graph_input_names, onnx_max_abs_diff
from distil.run.checkpoint_io import CheckpointError
from distil.run.output_dirs import MARKER_FILE
from tests.conftest import assert_fill_mask_is_the_models_own, masked_batch, run_cli, tiny_masked_lm
from tests.model_fixtures import checkpoint_like_training, save_with_tokenizer
from tests.reliability.runs import file_digests
from tests.tiny_assets import PLAIN_INPUTS, TOKEN_TYPE_INPUTS, VOCAB_SIZE, WORDS, tiny_tokenizer

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_exported_directory_reproduces_the_checkpoint_student(tmp_path, student_checkpoint, fresh_teacher_dir):
    ckpt, student = student_checkpoint
    export_checkpoint(ckpt, tmp_path / "hf")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    batch = masked_batch(VOCAB_SIZE)
    assert type(loaded).__name__ == "DistilBertForMaskedLM"
    assert torch.equal(logits(loaded, batch), logits(student, batch))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")  # the teacher's, named by the checkpoint's run config
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(fresh_teacher_dir).get_vocab()
    assert_fill_mask_is_the_models_own(tmp_path / "hf", "the king opened the {mask} .")


def test_the_student_is_saved_in_the_dtype_its_teacher_is_stored_in_unless_told_otherwise(
    tmp_path, student_checkpoint, fresh_teacher_dir
):
    ckpt, student = student_checkpoint  # its teacher is stored in float32
    half_teacher = tmp_path / "teacher-fp16"
    save_with_tokenizer(AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir, dtype=torch.float16), half_teacher)
    torch.save(checkpoint_like_training(student, half_teacher), tmp_path / "of-fp16-teacher.ckpt")
    export_checkpoint(ckpt, tmp_path / "fp32")
    export_checkpoint(tmp_path / "of-fp16-teacher.ckpt", tmp_path / "fp16")
    export_checkpoint(tmp_path / "of-fp16-teacher.ckpt", tmp_path / "asked", dtype="float32")
    fp32, fp16, asked = ((tmp_path / d / "model.safetensors").stat().st_size for d in ("fp32", "fp16", "asked"))
    assert fp16 / fp32 == pytest.approx(0.5, abs=0.02) and asked == fp32
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"
    half = AutoModelForMaskedLM.from_pretrained(tmp_path / "fp16", dtype=torch.float32).eval()
    batch = masked_batch(VOCAB_SIZE)
    assert torch.allclose(logits(half, batch), logits(student, batch), atol=1e-2)


def test_a_tokenizer_of_another_vocabulary_is_refused_naming_both_and_nothing_is_written(
    tmp_path, student_checkpoint, fresh_teacher_dir
):
    other = tmp_path / "other"
    tiny_tokenizer(list(reversed(WORDS))).save_pretrained(other)  # as many tokens as the run's, other ids
    with pytest.raises(
        ValueError,
        match=f"vocabulary mismatch: tokenizer='{other}' \\(128 tokens\\) maps tokens to other ids than the "
        f"tokenizer of the run's teacher.name_or_path='{fresh_teacher_dir}'",
    ):
        export_checkpoint(student_checkpoint[0], tmp_path / "out", tokenizer=str(other))
    assert not (tmp_path / "out").exists()
    export_checkpoint(student_checkpoint[0], tmp_path / "out", tokenizer=str(fresh_teacher_dir))  # the same vocabulary


def test_real_training_checkpoint_exports_like_the_runs_own_student(tmp_path, tiny_run_dir):
    export_checkpoint(tiny_run_dir / "checkpoints" / "last.ckpt", tmp_path / "hf")
    ours = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    runs = AutoModelForMaskedLM.from_pretrained(tiny_run_dir / "student").eval()
    batch = masked_batch(VOCAB_SIZE)
    assert torch.equal(logits(ours, batch), logits(runs, batch))


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt='.*missing.ckpt' does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"lacks \['student_config', 'run_config'\]"):
        read_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="dtype='int8' is not allowed"):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "out", dtype="int8")


def test_a_truncated_checkpoint_is_named_as_such(tmp_path, tiny_run_dir):
    data = (tiny_run_dir / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"ckpt='{tmp_path / 'cut.ckpt'}': checkpoint .* is truncated or corrupt"):
        read_checkpoint(tmp_path / "cut.ckpt")


def test_a_tokenizer_folder_without_tokenizer_files_is_named_and_nothing_is_written(
    tmp_path, student_checkpoint, model_without_tokenizer_dir
):
    with pytest.raises(ValueError, match=f"tokenizer='{model_without_tokenizer_dir}' has no tokenizer files"):
        export_checkpoint(student_checkpoint[0], tmp_path / "out", tokenizer=str(model_without_tokenizer_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_model_paths_resolve_or_fail_with_the_key(tmp_path, fresh_teacher_dir, student_checkpoint):
    assert hf_model_path("teacher_model", str(fresh_teacher_dir), tmp_path) == str(fresh_teacher_dir)
    assert hf_model_path("teacher_model", "bert-base-uncased", tmp_path) == "bert-base-uncased"  # a hub id
    exported = hf_model_path("student_model", str(student_checkpoint[0]), tmp_path)
    assert exported == str(tmp_path / "student_model") and (tmp_path / "student_model" / "config.json").is_file()
    for missing in ("/nonexistent/student", "outputs/runs/x/student"):  # not hub ids: those have at most one /
        with pytest.raises(FileNotFoundError, match=f"student_model='{missing}' is not a model"):
            hf_model_path("student_model", missing, tmp_path)
    with pytest.raises(FileNotFoundError, match="model='.*' has no config.json"):
        hf_model_path("model", str(tmp_path), tmp_path)


@pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install -e .[onnx])")
def test_onnx_export_matches_pytorch_and_the_check_can_fail(tmp_path, student_checkpoint, fresh_teacher_dir):
    ckpt, student = student_checkpoint
    out = tmp_path / "hf"
    result = run_cli(
        tmp_path, f"ckpt={ckpt}", f"out={out}", "onnx=true", f"hydra.run.dir={tmp_path}/log", module="distil.export"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |onnx - pytorch| logit difference" in result.stdout
    import onnxruntime

    batch = masked_batch(VOCAB_SIZE, batch=5, length=11, seed=3)  # another batch size and length than the export's
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    got = session.run(["logits"], {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})[0]
    real = batch["attention_mask"].bool()
    assert (torch.from_numpy(got)[real] - logits(student, batch)[real]).abs().max().item() < 1e-4
    tokenizer = AutoTokenizer.from_pretrained(out)
    other = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir)  # a different model: the check must see it
    assert onnx_max_abs_diff(other, tokenizer, out / "model.onnx") > 1e-2


def test_export_refuses_a_model_folder_it_did_not_write_unless_overwrite(
    tmp_path, student_checkpoint, fresh_teacher_dir
):
    teacher_copy = tmp_path / "teacher"
    shutil.copytree(fresh_teacher_dir, teacher_copy)
    before = file_digests(teacher_copy)
    with pytest.raises(FileExistsError, match=f"out='{teacher_copy}' holds config.json, model.safetensors"):
        export_checkpoint(student_checkpoint[0], teacher_copy)
    assert file_digests(teacher_copy) == before
    export_checkpoint(student_checkpoint[0], teacher_copy, overwrite=True)
    assert type(AutoModelForMaskedLM.from_pretrained(teacher_copy)).__name__ == "DistilBertForMaskedLM"


def test_a_re_export_replaces_the_whole_earlier_export(tmp_path, student_checkpoint):
    out = tmp_path / "hf"
    export_checkpoint(student_checkpoint[0], out)
    (out / "model.onnx").write_bytes(b"graph of the earlier export")  # as an onnx=true export leaves it
    export_checkpoint(student_checkpoint[0], out, dtype="float16")
    assert not (out / "model.onnx").exists()
    assert json.loads((out / MARKER_FILE).read_text())["checkpoint"] == str(student_checkpoint[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf.lock", "hf"]


@pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install -e .[onnx])")
@pytest.mark.parametrize(
    ("model_type", "tokenizer_inputs", "graph_inputs"),
    [
        ("distilbert", TOKEN_TYPE_INPUTS, ["input_ids", "attention_mask"]),  # BERT's tokenizer, a DistilBERT student
        ("bert", TOKEN_TYPE_INPUTS, ["input_ids", "attention_mask", "token_type_ids"]),
        ("bert", PLAIN_INPUTS, ["input_ids", "attention_mask"]),
    ],
)
def test_the_onnx_graph_takes_the_inputs_the_student_uses_and_the_tokenizer_returns(
    tmp_path, student_checkpoint, model_type, tokenizer_inputs, graph_inputs
):
    teacher_dir = tmp_path / "teacher"
    tiny_tokenizer(with_token_types=tokenizer_inputs == TOKEN_TYPE_INPUTS).save_pretrained(teacher_dir)
    student = student_checkpoint[1] if model_type == "distilbert" else tiny_masked_lm("bert", 1, VOCAB_SIZE)
    torch.save(checkpoint_like_training(student, teacher_dir), tmp_path / "last.ckpt")
    assert AutoTokenizer.from_pretrained(teacher_dir).model_input_names == tokenizer_inputs

    diff = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "out", dtype="float32", onnx_opset=18)  # + parity

    assert diff < 1e-4 and graph_input_names(tmp_path / "out" / "model.onnx") == graph_inputs
    if "token_type_ids" in graph_inputs:  # the graph reads the types it takes: second segment as PyTorch sees it
        batch = masked_batch(VOCAB_SIZE) | {"token_type_ids": (torch.arange(16) >= 8).long().expand(3, 16)}
        session = cpu_session(tmp_path / "out" / "model.onnx")
        got = torch.from_numpy(session.run(["logits"], {k: batch[k].numpy() for k in graph_inputs})[0])
        with torch.no_grad():
            expected = student(**{k: batch[k] for k in graph_inputs}).logits
            without_types = student(**{k: batch[k] for k in PLAIN_INPUTS}).logits
        real = batch["attention_mask"].bool()
        assert (got - expected)[real].abs().max() < 1e-4 < (expected - without_types)[real].abs().max()
