"""`python -m distil.perf.bench` on a CPU with a tiny model: one JSON line per setting, FLOPs as the issue counts."""

import json
import math
import subprocess
import sys

import pytest
from transformers import BertConfig

from distil.perf.bench import (
    MASK_ID,
    SyntheticBatches,
    labelled_count,
    masked_count,
    model_flops_per_step,
    run_setting,
    teacher_config,
)
from tests.conftest import REPO_ROOT, compose_config

TINY = [
    "bench_model=tiny",
    "trainer.accelerator=cpu",
    "warmup_steps=1",
    "timed_steps=2",
    "max_length=16",
    "tokens_per_step=64",
    "count_syncs=false",
]


def bench_config(overrides: list[str]):
    return compose_config("bench", *overrides)


def test_bert_base_flops_per_token_match_the_issue():
    """About 465 MFLOP per token at 256 x 128 with the vocabulary projection only on the masked tokens."""
    bert_base = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, intermediate_size=3072)
    masked = masked_count(256, 128, 0.15)
    assert masked == math.ceil(0.15 * 256 * 126) == 4839
    per_token = model_flops_per_step(bert_base, 6, 256, 128, masked) / (256 * 128)
    assert per_token == pytest.approx(465e6, rel=5e-3)
    all_rows = model_flops_per_step(bert_base, 6, 256, 128, 256 * 128) / (256 * 128)
    assert all_rows - per_token == pytest.approx((256 * 128 - masked) / (256 * 128) * 4 * 2 * 768 * (768 + 30522))


def test_synthetic_batches_mask_exactly_the_collator_count():
    batch = next(iter(SyntheticBatches(batch_size=4, max_length=16, vocab_size=1100, mlm_probability=0.15)))
    masked = batch["labels"] != -100
    assert int(masked.sum()) == masked_count(4, 16, 0.15) == 9
    assert not masked[:, 0].any() and not masked[:, -1].any()  # never [CLS] or [SEP]
    assert batch["attention_mask"].all()
    assert bool((batch["input_ids"][masked] == MASK_ID).any())  # most masked positions show [MASK]


@pytest.mark.parametrize("opt", ["reference", "fused_adamw"])
def test_tiny_cpu_setting_reports_throughput(opt, tmp_path):
    curve = tmp_path / "curve.json"
    result = run_setting(bench_config([*TINY, f"bench_opt={opt}", f"loss_curve_file={curve}"]))
    assert result["setting"] == opt and result["device"] == "cpu" and result["compile"] is False
    assert (result["batch_size"], result["max_length"]) == (4, 16)
    assert result["tokens_per_s"] == pytest.approx(64 * 1000 / result["step_ms"], rel=0.03)  # 64 tokens a step
    flops = model_flops_per_step(teacher_config(bench_config(TINY).bench_model), 1, 4, 16, masked_count(4, 16, 0.15))
    assert result["model_tflop_per_step"] == pytest.approx(flops / 1e12, abs=5e-4)
    achieved = flops / (result["step_ms"] / 1000) / 1e12  # the step's model FLOPs over its measured time
    assert result["achieved_tflops"] == pytest.approx(achieved, rel=0.05, abs=0.06)
    assert result["mfu"] == pytest.approx(result["achieved_tflops"] / 989.0, rel=0.05, abs=1e-4)
    losses = json.loads(curve.read_text())["losses"]
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)


@pytest.mark.parametrize("model_type", ["roberta", "modernbert"])
def test_any_family_benches_with_the_objectives_extra_terms(model_type):
    loss = "{_target_:distil.modules.losses.reverse_kl_loss,_partial_:true}"
    term = f"{{_target_:distil.modules.objective.LogitsTerm,name:reverse_kl,weight:0.5,loss:{loss}}}"
    settings = [*TINY, "bench_opt=reference", f"bench_model.model_type={model_type}", f"distill.extra_terms=[{term}]"]
    result = run_setting(bench_config(settings))
    assert result["loss_terms"] == ["kl", "label", "reverse_kl", "cos"]
    assert result["tokens_per_s"] > 0 and math.isfinite(result["final_loss"])
    with pytest.raises(ValueError, match="bench_model: the teacher's model_type is 'opt'"):
        teacher_config(bench_config([*TINY, "bench_model.model_type=opt"]).bench_model)


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_a_causal_teacher_benches_with_next_token_batches(divergence):
    settings = [*TINY, "bench_opt=reference", "bench_model=llama_demo", "bench_model.num_hidden_layers=2"]
    settings += ["bench_model.vocab_size=300", "distill=distilgpt2", f"distill.divergence={divergence}"]
    result = run_setting(bench_config(settings))
    assert result["divergence"] == divergence and result["loss_terms"] == ["kl", "label", "cos"]
    assert result["tokens_per_s"] > 0 and math.isfinite(result["final_loss"])
    batch = next(iter(SyntheticBatches(4, 16, 300, 0.15, causal=True)))
    assert batch["labels"][:, :-1].tolist() == batch["input_ids"][:, 1:].tolist()
    assert int((batch["labels"] != -100).sum()) == labelled_count(4, 16, 0.15, causal=True) == 4 * 15


def test_command_line_prints_one_json_line(tmp_path):
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "distil.perf.bench",
        *TINY,
        "bench_opt=chunked_vocab_loss",
        f"results_file={results}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    output = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["setting"] == "chunked_vocab_loss"
    assert json.loads(results.read_text()) == lines[0]
