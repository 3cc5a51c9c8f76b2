"""`distil.evaluate` on causal LMs: next-token loss, accuracy, perplexity and top-1 agreement against a hand
computation over the shifted logits of the held-out rows, greedy continuations against a hand-written greedy loop,
the command's table, and the kind checks (the shared Llama-layout teacher: tests/test_shared_causal_demo.py)."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM

from distil.evaluate import evaluate
from distil.evaluation.report import format_continuations, report_rows
from distil.evaluation.tables import format_comparison
from distil.modules.student import build_student
from tests.conftest import perturb, run_cli, tiny_data_overrides
from tests.evaluation.test_evaluate import evaluate_config
from tests.model_fixtures import FAST_SPEED
from tests.tiny_assets import causal_tokenizer, write_tiny_causal_teacher

NEW_TOKENS = 6  # continuations.max_new_tokens of these tests


@pytest.fixture(scope="module")
def causal_teacher_dir(tmp_path_factory):
    """A tiny 4-layer Llama-layout teacher with the byte-level BPE tokenizer, on disk."""
    return write_tiny_causal_teacher(tmp_path_factory.mktemp("causal_teacher"))


@pytest.fixture(scope="module")
def causal_student_dir(tmp_path_factory, causal_teacher_dir):
    """A 2-layer student built from the teacher, every weight perturbed (so it predicts otherwise), on disk."""
    teacher = AutoModelForCausalLM.from_pretrained(causal_teacher_dir)
    student = perturb(build_student(teacher, num_layers=2).eval(), 0.05, seed=3)
    directory = tmp_path_factory.mktemp("causal_student")
    student.save_pretrained(directory)
    causal_tokenizer().save_pretrained(directory)
    return directory


def causal_evaluate_config(tmp_path, student, teacher, corpus_dir, *extra):
    """`evaluate_config` of the masked tests, continuing the prompts by `NEW_TOKENS` tokens."""
    return evaluate_config(tmp_path, student, teacher, corpus_dir, f"continuations.max_new_tokens={NEW_TOKENS}", *extra)


def shifted_logits_and_targets(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: a full forward of each row; the logits of position t against the token at t + 1, wherever both
    are real tokens (read from input_ids and attention_mask only, not from the batches' labels)."""
    logits, targets = [], []
    with torch.no_grad():
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            real_next = batch["attention_mask"][:, 1:].bool()
            logits.append(out[:, :-1][real_next])
            targets.append(batch["input_ids"][:, 1:][real_next])
    return torch.cat(logits), torch.cat(targets)


def greedy_by_hand(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding as a loop of full forwards: append the argmax of the last position, stop after the
    end-of-text token; the new tokens decoded without special tokens."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    prompt_length = ids.shape[1]
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
            if next_id == tokenizer.eos_token_id:
                break
    return tokenizer.decode(ids[0, prompt_length:], skip_special_tokens=True)


def test_next_token_scores_and_continuations_equal_a_hand_computation(
    tmp_path, causal_teacher_dir, causal_student_dir, tiny_corpus_dir
):
    cfg = causal_evaluate_config(tmp_path, causal_student_dir, causal_teacher_dir, tiny_corpus_dir)
    report = evaluate(cfg)

    datamodule = instantiate(cfg.data, causal=True)
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    models = {
        name: AutoModelForCausalLM.from_pretrained(path).eval()
        for name, path in (
            ("teacher", causal_teacher_dir),
            ("student", causal_student_dir),
        )
    }
    logits = {}
    for name, model in models.items():
        logits[name], targets = shifted_logits_and_targets(model, batches)
        loss = F.cross_entropy(logits[name], targets).item()
        assert report[name]["next_token_loss"] == pytest.approx(loss, rel=1e-5)
        assert report[name]["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
        accuracy = (logits[name].argmax(-1) == targets).float().mean().item()
        assert report[name]["next_token_acc"] == pytest.approx(accuracy)
        assert "mlm_acc" not in report[name]
    assert report["prediction"] == "next_token" and "masked_tokens" not in report
    assert report["next_tokens"] == len(targets) == sum(int(b["attention_mask"][:, 1:].sum()) for b in batches)
    agreement = (logits["student"].argmax(-1) == logits["teacher"].argmax(-1)).float().mean().item()
    assert report["top1_agreement"] == pytest.approx(agreement)
    assert report["teacher"]["ppl"] != pytest.approx(report["student"]["ppl"], rel=1e-3)  # the models differ

    tokenizer = causal_tokenizer()
    assert report["continuations"] == [
        {
            "prompt": prompt,
            **{name: greedy_by_hand(model, tokenizer, prompt, NEW_TOKENS) for name, model in models.items()},
        }
        for prompt in cfg.continuations.prompts
    ]
    assert len(report["continuations"]) == 3


def test_the_command_prints_next_token_rows_and_the_continuations(
    tmp_path, causal_teacher_dir, causal_student_dir, tiny_corpus_dir
):
    result = run_cli(
        tmp_path,
        f"student_model={causal_student_dir}",
        f"teacher_model={causal_teacher_dir}",
        f"hydra.run.dir={tmp_path / 'evaluate'}",
        *tiny_data_overrides(tiny_corpus_dir),
        *FAST_SPEED,
        f"continuations.max_new_tokens={NEW_TOKENS}",
        module="distil.evaluate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "evaluate" / "report.json").read_text())
    table = format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher"))
    assert f"{table}\n{format_continuations(report)}\n{report['next_tokens']} next tokens scored" in result.stdout
    labels = [row[0] for row in report_rows(report)]
    assert "next-token accuracy (%)" in labels and "next-token loss (nats)" in labels
    assert not any("masked" in label for label in labels)
    for entry in report["continuations"]:
        assert repr(entry["prompt"]) in result.stdout and repr(entry["student"]) in result.stdout


def test_a_masked_student_of_a_causal_teacher_is_refused_before_any_weights(
    tmp_path, causal_teacher_dir, tiny_teacher_dir, tiny_corpus_dir
):
    cfg = causal_evaluate_config(tmp_path, tiny_teacher_dir, causal_teacher_dir, tiny_corpus_dir)
    teacher, student = repr(str(causal_teacher_dir)), repr(str(tiny_teacher_dir))
    message = (
        f"teacher_model={teacher} is a causal-LM model, student_model={student} is a masked-LM model: "
        "teacher and student must both be masked LMs or both causal LMs"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("continuations.max_new_tokens=0", r"continuations.max_new_tokens=0 is not allowed: an integer >= 1"),
        ("continuations.prompts=['a', ' ']", r"continuations.prompts=\['a', ' '\] is not allowed: give a list of non"),
    ],
)
def test_bad_continuation_settings_are_named(
    tmp_path, causal_teacher_dir, causal_student_dir, tiny_corpus_dir, override, message
):
    with pytest.raises(ValueError, match=message):
        evaluate(causal_evaluate_config(tmp_path, causal_student_dir, causal_teacher_dir, tiny_corpus_dir, override))
