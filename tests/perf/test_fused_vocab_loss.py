"""The fused chunked vocabulary loss equals the plain logits-then-loss computation, in value and gradient."""

import pytest
import torch
import torch.nn.functional as F

from distil.modules.fused_vocab_loss import VocabLossWeights, fused_vocab_losses
from distil.modules.losses import logits_mse_loss, mlm_loss, soft_target_loss

ROWS, HIDDEN, VOCAB = 37, 16, 50


def random_inputs(seed: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=dtype) * scale).requires_grad_()

    labels = torch.randint(0, VOCAB, (ROWS,), generator=generator)
    labels[torch.rand(ROWS, generator=generator) < 0.7] = -100
    labels[0] = 3  # at least one masked row
    student = (randn(ROWS, HIDDEN), randn(VOCAB, HIDDEN, scale=0.5), randn(VOCAB, scale=0.5))
    teacher = tuple(t.detach() for t in (randn(ROWS, HIDDEN), randn(VOCAB, HIDDEN, scale=0.5), randn(VOCAB)))
    return student, teacher, labels


def plain_terms(student, teacher, labels, temperature):
    student_logits = F.linear(student[0], student[1], student[2])
    teacher_logits = F.linear(teacher[0], teacher[1], teacher[2])
    masked = labels != -100
    return {
        "ce": soft_target_loss(student_logits, teacher_logits, temperature),
        "mlm": mlm_loss(student_logits[masked], labels[masked]),
        "mse": logits_mse_loss(student_logits, teacher_logits),
    }


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 100])
@pytest.mark.parametrize(("alpha_ce", "alpha_mlm", "alpha_mse"), [(5.0, 2.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.5, 0.3)])
def test_values_and_gradients_equal_plain_computation(chunk_rows, alpha_ce, alpha_mlm, alpha_mse):
    student, teacher, labels = random_inputs(seed=chunk_rows)
    weights = VocabLossWeights(2.5, alpha_ce, alpha_mlm, alpha_mse, chunk_rows)
    fused = fused_vocab_losses(
        student[0], student[1:], teacher[0], teacher[1:], labels, int((labels != -100).sum()), weights
    )
    fused_grads = torch.autograd.grad(3.0 * fused["vocab_loss"], student)

    plain = plain_terms(student, teacher, labels, 2.5)
    alphas = {"ce": alpha_ce, "mlm": alpha_mlm, "mse": alpha_mse}
    plain_total = sum(alphas[name] * value for name, value in plain.items())
    plain_grads = torch.autograd.grad(3.0 * plain_total, student)

    assert fused["vocab_loss"].item() == pytest.approx(plain_total.item(), rel=1e-5)
    assert set(fused) - {"vocab_loss"} == {name for name, alpha in alphas.items() if alpha > 0}
    for name in set(fused) - {"vocab_loss"}:
        assert fused[name].item() == pytest.approx(plain[name].item(), rel=1e-5), name
        assert not fused[name].requires_grad
    for got, expected in zip(fused_grads, plain_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_no_gradient_work_without_grad():
    student, teacher, labels = random_inputs(seed=0)
    weights = VocabLossWeights(2.0, 5.0, 2.0, 0.0, 8)
    with torch.no_grad():
        fused = fused_vocab_losses(
            student[0], student[1:], teacher[0], teacher[1:], labels, int((labels != -100).sum()), weights
        )
    plain = plain_terms(student, teacher, labels, 2.0)
    assert fused["vocab_loss"].item() == pytest.approx(5.0 * plain["ce"].item() + 2.0 * plain["mlm"].item())
    assert not fused["vocab_loss"].requires_grad


def test_bf16_autocast_matches_fp32_within_bf16_rounding():
    student, teacher, labels = random_inputs(seed=1)
    weights = VocabLossWeights(2.0, 5.0, 2.0, 0.0, 16)
    count = int((labels != -100).sum())
    exact = fused_vocab_losses(student[0], student[1:], teacher[0], teacher[1:], labels, count, weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fused_vocab_losses(student[0], student[1:], teacher[0], teacher[1:], labels, count, weights)
    grad_exact = torch.autograd.grad(exact["vocab_loss"], student)
    grad_low = torch.autograd.grad(low["vocab_loss"], student)
    assert low["vocab_loss"].item() == pytest.approx(exact["vocab_loss"].item(), rel=2e-2)
    for got, expected in zip(grad_low, grad_exact):
        assert got.dtype == expected.dtype == torch.float32
        assert ((got - expected).norm() / expected.norm()).item() < 3e-2
