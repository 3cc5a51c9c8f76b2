"""The causal objective, written once with the masked one: next-token labels shifted by the collator, the
cross-entropy and each divergence at the positions with a next token to learn (padding and prompt tokens ignored),
against a hand computation from the models' full logits; the plain and the chunked path agree; validation names the
metrics by the kind of model."""

import functools
import math

import pytest
import torch

from distil.data.next_token import NextTokenCollator, next_token_labels
from distil.modules.distillation import DistillationModule
from distil.modules.row_index import IndexedBatch, RowIndex
from distil.modules.student import build_student
from distil.perf.step_speed import StepSpeed
from tests.conftest import perturb, tiny_causal_lm

EOS = 0
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def causal_batch() -> dict[str, torch.Tensor]:
    """Two rows of 8: a full one whose first 3 tokens are a prompt (not scored), and one of 5 real tokens, padded."""
    rows = [torch.tensor([7, 12, 9, 30, 41, 5, 17, EOS]).numpy(), torch.tensor([22, 3, 18, 6, EOS]).numpy()]
    batch = NextTokenCollator(pad_id=EOS, max_length=8)(rows)
    scored = batch["attention_mask"].clone()
    scored[0, :3] = 0  # the prompt of row 0
    batch["labels"] = next_token_labels(batch["input_ids"], scored)
    return batch


def test_next_token_labels_are_the_shifted_scored_tokens():
    batch = causal_batch()
    assert batch["input_ids"].tolist() == [[7, 12, 9, 30, 41, 5, 17, EOS], [22, 3, 18, 6, EOS, EOS, EOS, EOS]]
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    ignore = -100  # position t is labelled with token t + 1 when that token is real and scored
    assert batch["labels"].tolist() == [
        [ignore, ignore, 30, 41, 5, 17, EOS, ignore],
        [3, 18, 6, EOS, ignore, ignore, ignore, ignore],
    ]


def hand_reference(module: DistillationModule, batch, divergence: str, temperature: float, beta: float) -> dict:
    """The terms from the models' full logits, computed from probabilities position by position."""
    with torch.no_grad():
        args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student, teacher = module.student(**args).logits, module.teacher(**args).logits
    label_terms, divergence_terms = [], []
    for b, t in (batch["labels"] != -100).nonzero().tolist():
        target = int(batch["input_ids"][b, t + 1])
        label_terms.append(-torch.log_softmax(student[b, t].double(), -1)[target].item())
        p_s = torch.softmax(student[b, t].double() / temperature, -1)
        p_t = torch.softmax(teacher[b, t].double() / temperature, -1)
        kl = {
            "forward_kl": lambda: (p_t * (p_t / p_s).log()).sum(),
            "reverse_kl": lambda: (p_s * (p_s / p_t).log()).sum(),
            "jsd": lambda: (
                beta * (p_t * (p_t / (beta * p_t + (1 - beta) * p_s)).log()).sum()
                + (1 - beta) * (p_s * (p_s / (beta * p_t + (1 - beta) * p_s)).log()).sum()
            ),
        }[divergence]()
        divergence_terms.append(kl.item() * temperature**2)
    assert len(label_terms) == 9  # 5 scored next tokens in row 0, 4 in row 1
    return {"label": sum(label_terms) / 9, "kl": sum(divergence_terms) / 9}


def causal_module(divergence: str = "forward_kl", speed: StepSpeed = StepSpeed(), **kwargs) -> DistillationModule:
    teacher = tiny_causal_lm("llama", num_layers=4, vocab_size=64)
    student = perturb(build_student(teacher, num_layers=2), 0.2)  # apart from the teacher: every divergence > 0
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2)
    return DistillationModule(
        teacher, student, optimizer, divergence=divergence, beta=0.3, temperature=2.0, speed=speed, **kwargs
    ).eval()


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_next_token_loss_and_each_divergence_equal_the_hand_computation(divergence):
    torch.manual_seed(0)
    module = causal_module(divergence, kl_positions="masked", alpha_cos=0.0)
    batch = causal_batch()
    with torch.no_grad():
        losses = module.distillation_losses(batch)
    expected = hand_reference(module, batch, divergence, temperature=2.0, beta=0.3)
    assert losses["label"].item() == pytest.approx(expected["label"], rel=1e-5)
    assert losses["kl"].item() == pytest.approx(expected["kl"], rel=1e-4)
    assert expected["kl"] > 0.01
    assert losses["loss"].item() == pytest.approx(5.0 * expected["kl"] + 2.0 * expected["label"], rel=1e-4)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_the_chunked_path_gives_the_plain_losses_and_gradients(divergence):
    batch = causal_batch()
    results = []
    for speed in (StepSpeed(), StepSpeed(vocab_chunk_rows=4)):
        torch.manual_seed(0)
        module = causal_module(divergence, speed, kl_positions="all")
        losses = module.distillation_losses(batch)
        losses["loss"].backward()
        grads = {name: p.grad.clone() for name, p in module.student.named_parameters()}
        results.append(({k: v.item() for k, v in losses.items()}, grads))
    (plain, plain_grads), (chunked, chunked_grads) = results
    assert chunked == pytest.approx(plain, rel=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_validation_reports_next_token_metrics():
    torch.manual_seed(0)
    module = causal_module()
    batch = causal_batch()
    logged = {}
    module.log_dict = lambda metrics, **_: logged.update({k: float(v) for k, v in metrics.items()})
    with torch.no_grad():
        module.validation_step(IndexedBatch(batch, RowIndex.of(batch)), 0)
    module.on_validation_epoch_end()
    expected = hand_reference(module, batch, "forward_kl", temperature=1.0, beta=0.5)["label"]
    assert logged["val/student_next_token_loss"] == pytest.approx(expected, rel=1e-5)
    assert logged["val/student_ppl"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert {"val/teacher_next_token_acc", "val/top1_agreement"} <= set(logged)
    assert not any("mlm" in key for key in logged)
