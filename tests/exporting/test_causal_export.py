"""`distil.export` of a causal student, from a real 2-step `distil.train` run of a tiny Llama-layout teacher: a folder
that `AutoModelForCausalLM` loads and `pipeline("text-generation")` runs (greedily as `model.generate`), its ONNX
graph (input ids and attention mask in, logits out, no key-value cache) against PyTorch, its INT8 variants gated on
held-out perplexity (against a hand computation), and `distil.evaluate` of that export."""

import importlib.util
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from distil.evaluate import evaluate
from distil.evaluation.report import exported_header, exported_rows
from distil.export import export_checkpoint
from distil.exporting.int8_files import VARIANT_FILES
from distil.exporting.int8_gate import QualityGateError, check_int8_settings
from distil.exporting.lm_int8 import Int8Settings
from distil.exporting.onnx_model import cpu_session, graph_input_names, padded_batch, write_checked_onnx
from distil.train import train
from tests.conftest import compose_config, tiny_data_overrides, tiny_run_overrides
from tests.model_fixtures import FAST_SPEED
from tests.tiny_assets import write_tiny_causal_teacher

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="ONNX extra not installed (pip install -e .[onnx])")
PROMPTS = ("the king walked to", "she opened the door and")
NEW_TOKENS = 8  # new tokens per greedy continuation in these tests
MAX_PPL_INCREASE_PCT = 5.0  # the gate of the passing export


@pytest.fixture(scope="module")
def causal_teacher_dir(tmp_path_factory):
    return write_tiny_causal_teacher(tmp_path_factory.mktemp("causal_teacher"))


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, causal_teacher_dir, tiny_corpus_dir):
    """The run directory of `distil.train` (in this process) for 2 steps on the tiny causal teacher (DistilGPT2's
    objective)."""
    run_dir = tmp_path_factory.mktemp("causal_run")
    overrides = tiny_run_overrides(causal_teacher_dir, tiny_corpus_dir, steps=2)
    train(compose_config("train", *overrides, "distill=distilgpt2", "logger=csv", f"paths.output_dir={run_dir}"))
    return run_dir


def export_data_config(corpus_dir):
    return compose_config("export", "ckpt=unused", "out=unused", *tiny_data_overrides(corpus_dir)).data


def int8_settings(corpus_dir, max_ppl_increase_pct: float) -> Int8Settings:
    return Int8Settings(list(VARIANT_FILES), 1.0, 8, None, export_data_config(corpus_dir), max_ppl_increase_pct)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, causal_run, tiny_corpus_dir):
    """(folder, largest |onnx - pytorch| logit difference, quantization.json) of the run's checkpoint exported with
    ONNX and every INT8 variant."""
    out = tmp_path_factory.mktemp("causal_int8") / "export"
    settings = int8_settings(tiny_corpus_dir, MAX_PPL_INCREASE_PCT)
    diff = export_checkpoint(causal_run / "checkpoints" / "last.ckpt", out, onnx_opset=18, int8=settings)
    return out, diff, json.loads((out / "quantization.json").read_text())


def held_out_batches_of(out, corpus_dir) -> list[dict]:
    """The held-out causal batches the export's gate scores (its data config, the tokenizer saved in `out`)."""
    datamodule = instantiate(export_data_config(corpus_dir), tokenizer=str(out), causal=True)
    datamodule.setup("validate")
    return list(datamodule.val_dataloader())


def perplexity_by_hand(logits_of, batches) -> tuple[float, int]:
    """exp(mean cross-entropy) of the logits of position t against the token at t + 1, wherever both are real
    tokens (from input_ids and attention_mask alone), and the number of such positions. `logits_of(batch)` gives
    (B, L, V) logits."""
    losses, count = [], 0
    for batch in batches:
        real_next = batch["attention_mask"][:, 1:].bool()
        logits = logits_of(batch)[:, :-1][real_next]
        losses.append(F.cross_entropy(logits, batch["input_ids"][:, 1:][real_next], reduction="sum"))
        count += int(real_next.sum())
    return math.exp(float(sum(losses)) / count), count


def test_the_export_loads_as_a_causal_lm_and_text_generation_continues_as_generate(tmp_path, causal_run):
    out = tmp_path / "hf"
    export_checkpoint(causal_run / "checkpoints" / "last.ckpt", out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2
    runs_own = AutoModelForCausalLM.from_pretrained(causal_run / "student").eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(list(PROMPTS), padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, runs_own(**batch).logits)  # the run's own student

    generator = pipeline("text-generation", model=str(out))
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        greedy = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS
        )[0]
        assert len(greedy) > len(ids[0])
        generated = generator(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, return_tensors=True)
        assert generated[0]["generated_token_ids"] == greedy.tolist()
        text = generator(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, return_full_text=False)
        assert text[0]["generated_text"] == tokenizer.decode(greedy[len(ids[0]) :], skip_special_tokens=True)


@needs_onnx
def test_the_onnx_graph_of_a_causal_student_gives_the_pytorch_logits_without_a_cache(int8_export):
    out, diff, _ = int8_export
    assert diff <= 1e-4
    assert graph_input_names(out / "model.onnx") == ["input_ids", "attention_mask"]
    session = cpu_session(out / "model.onnx")
    assert [output.name for output in session.get_outputs()] == ["logits"]  # no present key-value outputs
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer([*PROMPTS, "a longer text: the old captain saw a white whale in the dark sea ."], padding=True)
    feed = {name: torch.tensor(batch[name]).numpy() for name in ("input_ids", "attention_mask")}
    got = torch.from_numpy(session.run(["logits"], feed)[0])
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        expected = model(**{name: torch.from_numpy(array) for name, array in feed.items()}).logits
    real = torch.from_numpy(feed["attention_mask"]).bool()
    assert got.shape == expected.shape and not real.all()  # padded rows: the dynamic axes and the mask are used
    assert torch.allclose(got[real], expected[real], atol=1e-4)


@needs_onnx
def test_the_int8_gate_of_a_causal_student_is_on_held_out_perplexity(int8_export, tiny_corpus_dir):
    out, _, report = int8_export
    batches = held_out_batches_of(out, tiny_corpus_dir)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        float_ppl, count = perplexity_by_hand(
            lambda b: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, batches
        )
    session = cpu_session(out / VARIANT_FILES["onnx_dynamic"])

    def onnx_logits(batch: dict) -> torch.Tensor:
        feed = {name: batch[name].numpy() for name in ("input_ids", "attention_mask")}
        return torch.from_numpy(session.run(["logits"], feed)[0])

    dynamic_ppl, _ = perplexity_by_hand(onnx_logits, batches)
    assert report["metric"] == "ppl" and report["next_tokens"] == count
    assert report["float"]["ppl"] == pytest.approx(float_ppl, rel=1e-5)
    assert report["int8"]["onnx_dynamic"]["ppl"] == pytest.approx(dynamic_ppl, rel=1e-5)
    for variant, entry in report["int8"].items():
        increase = 100 * (entry["ppl"] / report["float"]["ppl"] - 1)  # of the float model's, checked above
        assert entry["increase_pct"] == pytest.approx(increase, rel=1e-9)
        assert entry["passed"] is (increase <= MAX_PPL_INCREASE_PCT)
        assert 0.0 <= entry["top1_agreement"] <= 1.0 and "drop_points" not in entry
        if VARIANT_FILES[variant] is not None:
            assert (out / VARIANT_FILES[variant]).is_file() is entry["passed"]


@needs_onnx
def test_a_causal_variant_above_the_perplexity_limit_fails_the_export_naming_both_numbers(
    tmp_path, causal_run, int8_export, tiny_corpus_dir
):
    _, _, report = int8_export
    worst, entry = max(report["int8"].items(), key=lambda item: item[1]["increase_pct"])
    assert entry["increase_pct"] > 0  # INT8 rounding costs this student some perplexity
    limit = entry["increase_pct"] / 2
    out = tmp_path / "export"
    export_checkpoint(causal_run / "checkpoints" / "last.ckpt", out)  # an earlier export, kept by the failing one
    before = sorted(path.name for path in out.iterdir())
    message = (
        f"held-out perplexity rose by more than quantization.max_ppl_increase_pct={limit}: .*{worst}: "
        f"{entry['ppl']:.2f} vs float {report['float']['ppl']:.2f} "
        f"\\(perplexity increase {entry['increase_pct']:.2f}%\\)"
    )
    with pytest.raises(QualityGateError, match=message):
        export_checkpoint(
            causal_run / "checkpoints" / "last.ckpt",
            out,
            onnx_opset=18,
            int8=int8_settings(tiny_corpus_dir, limit),
        )
    assert sorted(path.name for path in out.iterdir()) == before


def test_a_negative_perplexity_limit_is_refused():
    with pytest.raises(ValueError, match=re.escape("quantization.max_ppl_increase_pct=-1.0 is not allowed")):
        check_int8_settings(["onnx_dynamic"], 1.0, 8, max_ppl_increase_pct=-1.0)


@needs_onnx
def test_evaluate_scores_the_onnx_and_int8_models_of_a_causal_export(
    tmp_path, int8_export, causal_teacher_dir, tiny_corpus_dir
):
    out, _, quantization = int8_export
    cfg = compose_config(
        "evaluate",
        f"student_model={out}",
        f"teacher_model={causal_teacher_dir}",
        f"report={tmp_path}/report.json",
        *tiny_data_overrides(tiny_corpus_dir),
        *FAST_SPEED,
        "continuations.max_new_tokens=2",
    )
    report = evaluate(cfg)
    passed = [variant for variant, entry in quantization["int8"].items() if entry["passed"]]
    assert list(report["exported"]) == ["onnx_float", *passed]
    assert report["exported"]["onnx_float"]["ppl"] == pytest.approx(report["student"]["ppl"], rel=1e-5)
    assert report["exported"]["onnx_float"]["top1_agreement"] == pytest.approx(1.0, abs=0.01)
    for variant in passed:  # the same held-out rows as the export's gate
        assert report["exported"][variant]["ppl"] == pytest.approx(quantization["int8"][variant]["ppl"], rel=1e-5)
    assert exported_header(report)[2] == "next-token acc (%)"
    assert all(row[0].endswith("LM head)") and "MLM" not in row[0] for row in exported_rows(report))


@needs_onnx
def test_the_parity_check_pads_with_end_of_text_for_a_tokenizer_without_padding(causal_run, tmp_path):
    """GPT-2's tokenizer has no padding token: the parity batch is padded with its end-of-text token."""
    run_dir = causal_run
    model = AutoModelForCausalLM.from_pretrained(run_dir / "student").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    tokenizer.pad_token = None
    batch = padded_batch(tokenizer, ["the sea", "the old captain saw the white whale"])
    assert batch["input_ids"][0, -1] == tokenizer.eos_token_id and batch["attention_mask"][0].tolist()[-1] == 0
    assert write_checked_onnx(model, tokenizer, tmp_path, opset=18, atol=1e-4) <= 1e-4
