"""The chunked vocabulary objective equals the objective on all logits at once, in value and gradient, for every
divergence, and never projects more than a chunk of rows at a time, even for a 150k-word vocabulary."""

import functools

import pytest
import torch
import torch.nn.functional as F

from distil.modules.objective import ObjectiveWeights, logits_terms, weighted_logits_loss
from distil.modules.teacher_targets import TeacherLogits
from distil.perf.chunked_vocab_loss import chunked_logits_loss

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


def objective_of(
    alpha_kl: float, alpha_label: float, alpha_mse: float, temperature: float = 2.5, divergence: str = "forward_kl"
):
    weights = ObjectiveWeights(
        temperature, alpha_kl=alpha_kl, alpha_label=alpha_label, alpha_mse=alpha_mse, divergence=divergence, beta=0.3
    )
    terms = [term for term in logits_terms(weights) if term.weight]
    return functools.partial(weighted_logits_loss, terms)


def all_at_once(student, teacher, labels, objective):
    masked = int((labels != -100).sum())
    return objective(F.linear(*student), F.linear(*teacher), labels, ROWS, masked)


def chunked(student, teacher, labels, objective, chunk_rows):
    masked = int((labels != -100).sum())
    return chunked_logits_loss(student[0], student[1:], TeacherLogits(*teacher), labels, masked, chunk_rows, objective)


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 100])
@pytest.mark.parametrize(("alpha_kl", "alpha_label", "alpha_mse"), [(5.0, 2.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.5, 0.3)])
def test_values_and_gradients_equal_the_objective_on_all_logits(chunk_rows, alpha_kl, alpha_label, alpha_mse):
    student, teacher, labels = random_inputs(seed=chunk_rows)
    objective = objective_of(alpha_kl, alpha_label, alpha_mse)
    total, contributions = chunked(student, teacher, labels, objective, chunk_rows)
    grads = torch.autograd.grad(3.0 * total, student)

    expected_total, expected_contributions = all_at_once(student, teacher, labels, objective)
    expected_grads = torch.autograd.grad(3.0 * expected_total, student)

    assert total.item() == pytest.approx(expected_total.item(), rel=1e-5)
    torch.testing.assert_close(contributions, expected_contributions.detach(), rtol=1e-5, atol=1e-7)
    assert not contributions.requires_grad
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_each_divergence_equals_the_objective_on_all_logits(divergence):
    student, teacher, labels = random_inputs(seed=5)
    objective = objective_of(5.0, 2.0, 0.0, divergence=divergence)
    total, contributions = chunked(student, teacher, labels, objective, chunk_rows=8)
    grads = torch.autograd.grad(total, student)
    expected_total, expected_contributions = all_at_once(student, teacher, labels, objective)
    expected_grads = torch.autograd.grad(expected_total, student)
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-5)
    torch.testing.assert_close(contributions, expected_contributions.detach(), rtol=1e-5, atol=1e-7)
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_a_150k_vocabulary_is_projected_one_chunk_of_rows_at_a_time_for_both_models():
    rows, hidden, vocab, chunk_rows = 96, 8, 150_000, 16  # all logits: 2 x 96 x 150k floats; a chunk: 2 x 16 x 150k
    generator = torch.Generator().manual_seed(0)
    student = tuple(
        (torch.randn(*shape, generator=generator) * 0.3).requires_grad_()
        for shape in ((rows, hidden), (vocab, hidden), (vocab,))
    )
    teacher = tuple(
        torch.randn(*shape, generator=generator) * 0.3 for shape in ((rows, hidden), (vocab, hidden), (vocab,))
    )
    labels = torch.randint(0, vocab, (rows,), generator=generator)
    objective, largest = objective_of(5.0, 2.0, 0.0, divergence="jsd"), []

    def recording(student_logits, teacher_logits, labels, rows, masked_rows):
        largest.append(max(student_logits.numel(), teacher_logits.numel()))
        return objective(student_logits, teacher_logits, labels, rows, masked_rows)

    total, _ = chunked_logits_loss(
        student[0], student[1:], TeacherLogits(*teacher), labels, rows, chunk_rows, recording
    )
    total.backward()
    assert max(largest) == chunk_rows * vocab and len(largest) == rows // chunk_rows  # never all rows' logits
    with torch.no_grad():
        expected, _ = objective(F.linear(*student), F.linear(*teacher), labels, rows, rows)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_no_more_than_a_chunk_of_rows_is_projected_at_a_time():
    student, teacher, labels = random_inputs(seed=0)
    objective, seen_rows = objective_of(5.0, 2.0, 0.0), []

    def recording(student_logits, teacher_logits, labels, rows, masked_rows):
        seen_rows.append((student_logits.shape[0], teacher_logits.shape[0]))
        return objective(student_logits, teacher_logits, labels, rows, masked_rows)

    total, _ = chunked(student, teacher, labels, recording, chunk_rows=8)
    total.backward()
    assert seen_rows == [(8, 8)] * 4 + [(5, 5)]  # 37 rows; no second pass in backward


def test_no_gradient_work_without_grad():
    student, teacher, labels = random_inputs(seed=0)
    objective = objective_of(5.0, 2.0, 0.0, temperature=2.0)
    with torch.no_grad():
        total, _ = chunked(student, teacher, labels, objective, chunk_rows=8)
        expected, _ = all_at_once(student, teacher, labels, objective)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not total.requires_grad


def test_bf16_autocast_matches_fp32_within_bf16_rounding():
    student, teacher, labels = random_inputs(seed=1)
    objective = objective_of(5.0, 2.0, 0.0, temperature=2.0)
    exact, _ = chunked(student, teacher, labels, objective, chunk_rows=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = chunked(student, teacher, labels, objective, chunk_rows=16)
    grad_exact = torch.autograd.grad(exact, student)
    grad_low = torch.autograd.grad(low, student)
    assert low.item() == pytest.approx(exact.item(), rel=2e-2)
    for got, expected in zip(grad_low, grad_exact):
        assert got.dtype == expected.dtype == torch.float32
        assert ((got - expected).norm() / expected.norm()).item() < 3e-2
