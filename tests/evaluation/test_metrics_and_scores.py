"""Held-out masked-LM scoring: the metric classes against hand-computed values, and `held_out_scores` against a
plain full forward of both models."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM

from distil.evaluation.scoring import held_out_scores, scored_logits
from distil.modules.metrics import MASKED_TOKENS, TokenPredictionMetrics, Top1Agreement
from distil.modules.student import build_student
from tests.conftest import masked_batch
from tests.tiny_assets import VOCAB_SIZE


def test_masked_lm_metrics_by_hand():
    metrics = TokenPredictionMetrics()
    # batch 1: two tokens over a 3-word vocabulary; argmax 0 (correct) and 1 (wrong, label 2)
    metrics.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2]))
    # batch 2: one token, uniform logits, label 1 (argmax 0: wrong)
    metrics.update(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([1]))
    ce = [
        math.log(math.e**2 + 2) - 2.0,  # -log softmax([2,0,0])[0]
        math.log(math.e + 2) - 0.0,  # -log softmax([0,1,0])[2]
        math.log(3.0),  # -log(1/3)
    ]
    result = metrics.compute()
    assert result["mlm_loss"].item() == pytest.approx(sum(ce) / 3, rel=1e-6)  # averaged over tokens, not batches
    assert result["mlm_acc"].item() == pytest.approx(1 / 3)
    assert result["ppl"].item() == pytest.approx(math.exp(sum(ce) / 3), rel=1e-6)


def test_top1_agreement_by_hand():
    agreement = Top1Agreement()
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[3.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    agreement.update(student, teacher)
    assert agreement.compute().item() == pytest.approx(3 / 4)


def full_forward_scores(model, batches):
    """Reference: full forward over every position, then the masked positions' logits."""
    logits, labels = [], []
    with torch.no_grad():
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            masked = batch["labels"] != -100
            logits.append(out[masked])
            labels.append(batch["labels"][masked])
    return torch.cat(logits), torch.cat(labels)


def test_scores_equal_a_full_forward_of_each_model(fresh_teacher_dir, fresh_student_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir).eval()
    student = AutoModelForMaskedLM.from_pretrained(fresh_student_dir).eval()
    batches = [masked_batch(VOCAB_SIZE, seed=s) for s in range(3)]
    models = {"teacher": scored_logits(teacher), "student": scored_logits(student)}
    scores = held_out_scores(models, batches, torch.device("cpu"), {"student": "teacher"}, MASKED_TOKENS)
    teacher_logits, labels = full_forward_scores(teacher, batches)
    student_logits, _ = full_forward_scores(student, batches)
    assert scores["masked_tokens"] == labels.numel() == 27  # 3 batches x 3 rows x 3 masked positions
    for name, logits in (("teacher", teacher_logits), ("student", student_logits)):
        loss = F.cross_entropy(logits, labels).item()
        assert scores[name]["mlm_loss"] == pytest.approx(loss, rel=1e-5)
        assert scores[name]["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
        assert scores[name]["mlm_acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()
    assert scores["student"]["top1_agreement"] == pytest.approx(agree)
    assert "top1_agreement" not in scores["teacher"]
    assert not torch.allclose(teacher_logits, student_logits, atol=1e-3)  # the two models really differ


def test_a_student_keeping_every_teacher_layer_scores_exactly_as_the_teacher(fresh_teacher_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir).eval()
    clone = build_student(teacher, num_layers=2, layer_map=[0, 1]).eval()
    models = {"teacher": scored_logits(teacher), "student": scored_logits(clone)}
    scores = held_out_scores(
        models, [masked_batch(VOCAB_SIZE, seed=5)], torch.device("cpu"), {"student": "teacher"}, MASKED_TOKENS
    )
    assert scores["student"]["top1_agreement"] == 1.0
    assert scores["student"]["mlm_loss"] == pytest.approx(scores["teacher"]["mlm_loss"], abs=1e-5)


def test_no_masked_token_is_an_error(fresh_teacher_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir).eval()
    batch = masked_batch(VOCAB_SIZE)
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="no masked tokens"):
        held_out_scores({"teacher": scored_logits(teacher)}, [batch], torch.device("cpu"), {}, MASKED_TOKENS)
