"""The README's causal commands on the shared Llama-layout teacher (2 steps each here): the demo (`experiment=
demo_causal`), a 3-layer student of the teacher's class, its grouped-query heads and tied embeddings kept, whose
next-token metrics on the held-out documents the run prints and which generates text with its own tokenizer;
`distil.evaluate` of it on text neither model saw; the SQuAD instruction demo."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distil.evaluate import evaluate
from distil.train import train
from tests.conftest import assert_logged_terms_weigh_into_the_loss, compose_config, run_cli, shared_assets_dir
from tests.model_fixtures import FAST_SPEED

pytestmark = pytest.mark.shared
TEACHER = "models/llama-teacher-6x192"


@pytest.fixture(scope="module")
def causal_demo_run(tmp_path_factory):
    shared_dir = shared_assets_dir()
    if not (shared_dir / TEACHER).is_dir():
        pytest.skip(f"shared causal teacher not found at {shared_dir / TEACHER} (set DISTIL_SHARED)")
    home = tmp_path_factory.mktemp("causal_demo")
    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    overrides += ["data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "logger=csv"]
    result = run_cli(home, "experiment=demo_causal", f"hydra.run.dir={home / 'run'}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "run", result.stdout


def test_the_causal_demo_prints_next_token_metrics_of_both_models(causal_demo_run):
    _, stdout = causal_demo_run
    rows = {line.split("  ")[0]: line.split()[-2:] for line in stdout.splitlines() if "perplexity" in line}
    teacher_ppl, student_ppl = (float(value) for value in rows["perplexity"])
    assert 20 < teacher_ppl < student_ppl  # the teacher predicts its held-out text better than a 2-step student
    assert "held-out next-token accuracy (%)" in stdout and "top-1 agreement with the teacher (%)" in stdout


def test_the_student_is_three_teacher_layers_and_generates(causal_demo_run):
    run_dir, _ = causal_demo_run
    teacher = AutoModelForCausalLM.from_pretrained(shared_assets_dir() / TEACHER)
    student = AutoModelForCausalLM.from_pretrained(run_dir / "student").eval()
    assert student.config.num_hidden_layers == 3 and student.config.distil_layer_map == [0, 2, 5]
    assert student.config.num_key_value_heads == teacher.config.num_key_value_heads == 2
    assert student.lm_head.weight is student.get_input_embeddings().weight  # tied, as the teacher's
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    prompt = tokenizer("The ship sailed", return_tensors="pt")
    with torch.no_grad():
        output = student.generate(
            **prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    assert output.shape[1] == prompt["input_ids"].shape[1] + 8


@pytest.mark.parametrize("data", ["demo_causal", "unseen_text_causal"])
def test_evaluate_scores_the_demo_student_against_its_teacher(causal_demo_run, data, tmp_path):
    """The README's `distil.evaluate` of the demo student, on 2 batches of the teacher's held-out paragraphs
    (`data=demo_causal`) and of text neither model saw (`data=unseen_text_causal`: SQuAD dev, CoNLL test)."""
    run_dir, _ = causal_demo_run
    cfg = compose_config(
        "evaluate",
        f"data={data}",
        f"student_model={run_dir / 'student'}",
        f"teacher_model={shared_assets_dir() / TEACHER}",
        f"report={tmp_path}/report.json",
        "max_batches=2",
        "data.val_batch_size=4",
        "data.num_workers=0",
        "continuations.max_new_tokens=8",
        *FAST_SPEED,
    )
    report = evaluate(cfg)
    assert report["prediction"] == "next_token"
    assert report["next_tokens"] == 2 * 4 * 255  # 2 batches of 4 full 256-token rows: 255 next tokens each
    assert report["teacher"]["parameters"] == 3_934_656  # the shared teacher's pretrain_report.json
    for name in ("teacher", "student"):
        assert report[name]["ppl"] == pytest.approx(math.exp(report[name]["next_token_loss"]), rel=1e-5)
    if data == "demo_causal":  # 103.6 on its held-out paragraphs per its pretraining report
        assert 30 < report["teacher"]["ppl"] < 300
    assert report["student"]["ppl"] > report["teacher"]["ppl"]  # half the layers, 2 steps of distillation
    assert [entry["prompt"] for entry in report["continuations"]] == list(cfg.continuations.prompts)
    assert any(char.isalpha() for entry in report["continuations"] for char in entry["teacher"])  # it writes words


def test_the_squad_instruction_demo_trains_on_answers(tmp_path):
    """The README's `experiment=demo_causal data=squad_instructions`, 2 steps (the command's body, in this process)."""
    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    overrides += ["data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "logger=csv"]
    overrides += ["data.prescan=false", "trainer.log_every_n_steps=1", "callbacks.progress_bar.refresh_rate=0"]
    train(
        compose_config(
            "train", "experiment=demo_causal", "data=squad_instructions", f"paths.output_dir={tmp_path}", *overrides
        )
    )
    rows = assert_logged_terms_weigh_into_the_loss(tmp_path, steps=2)
    assert any(row.get("val/student_next_token_acc") for row in rows)
