"""GPU checks of the optimised step (skipped without CUDA; run on an H100, results in docs/performance.md).

pytest tests/perf -m gpu -s       # prints the measured numbers
"""

import json
import os
from pathlib import Path

import pytest
import torch

from distil.perf.bench import run_setting
from tests.perf.test_bench import bench_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
NO_DROPOUT = ["bench_model.hidden_dropout_prob=0", "bench_model.attention_probs_dropout_prob=0"]
CURVE_STEPS = 200


def record(name: str, value) -> None:
    """Print a result, and write it to $DISTIL_PERF_OUT/<name>.json when that variable is set."""
    print(f"\n{name}: {json.dumps(value)}")
    if os.environ.get("DISTIL_PERF_OUT"):
        Path(os.environ["DISTIL_PERF_OUT"], f"{name}.json").write_text(json.dumps(value))


@pytest.mark.parametrize("kl_positions", ["masked", "all"])
def test_optimised_step_never_waits_for_the_gpu(kl_positions):
    result = run_setting(
        bench_config(
            [
                "bench_opt=all",
                f"distill.kl_positions={kl_positions}",
                "batch_size=32",
                "max_length=128",
                "warmup_steps=5",
                "timed_steps=10",
                "count_syncs=true",
            ]
        )
    )
    record(f"syncs_{kl_positions}", result)
    assert result["host_syncs_per_step"] == 0


@pytest.mark.parametrize("kl_positions", ["masked", "all"])
@pytest.mark.parametrize("optimised_setting", ["fused_adamw", "all"])
def test_loss_curve_of_optimised_path_follows_the_reference(optimised_setting, kl_positions, tmp_path):
    """200 steps from the same weights and batches (dropout off): the optimised path (bf16, chunked vocab loss, fused
    AdamW; compiled too for `all`) against the fp32 eager plain reference."""
    curves, results = {}, {}
    for opt in ("reference", optimised_setting):
        results[opt] = run_setting(
            bench_config(
                [
                    f"bench_opt={opt}",
                    f"distill.kl_positions={kl_positions}",
                    "batch_size=32",
                    "max_length=128",
                    "warmup_steps=1",
                    f"timed_steps={CURVE_STEPS - 1}",
                    f"loss_curve_file={tmp_path / opt}.json",
                    *NO_DROPOUT,
                ]
            )
        )
        curves[opt] = torch.tensor(json.loads((tmp_path / f"{opt}.json").read_text())["losses"])
    reference, optimised = curves["reference"], curves[optimised_setting]
    relative = (optimised - reference).abs() / reference.abs()
    summary = {
        "optimised_setting": optimised_setting,
        "kl_positions": kl_positions,
        "steps": CURVE_STEPS,
        "reference_first_last": [reference[0].item(), reference[-1].item()],
        "optimised_first_last": [optimised[0].item(), optimised[-1].item()],
        "mean_relative_difference": relative.mean().item(),
        "max_relative_difference": relative.max().item(),
        "last20_mean_reference": reference[-20:].mean().item(),
        "last20_mean_optimised": optimised[-20:].mean().item(),
        "optimised_host_syncs_per_step": results[optimised_setting]["host_syncs_per_step"],
        "reference": reference.tolist(),
        "optimised": optimised.tolist(),
    }
    record(f"loss_curve_{optimised_setting}_{kl_positions}", summary)
    assert reference[-20:].mean() < 0.5 * reference[:5].mean()  # the run learns: the comparison is meaningful
    assert relative[0] < 1e-3  # same weights, same batch: the same function up to bf16 rounding
    assert relative.mean() < 0.1  # bf16 and fp32 trajectories drift apart by a few % while the loss falls fast
    assert (optimised[-20:].mean() / reference[-20:].mean() - 1).abs() < 0.03  # and end at the same loss
