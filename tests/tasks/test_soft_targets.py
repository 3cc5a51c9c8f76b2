"""The soft-target losses of task distillation against hand computation: T^2, ignored labels, padding, regression."""

import math

import pytest
import torch

from distil.tasks.soft_targets import (
    class_soft_loss,
    hidden_soft_loss,
    regression_soft_loss,
    span_soft_loss,
    token_soft_loss,
)


def kl_by_hand(student: list[float], teacher: list[float], temperature: float) -> float:
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2 with math only."""

    def softmax(logits):
        exps = [math.exp(z / temperature) for z in logits]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) * temperature**2


STUDENT = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
TEACHER = [[2.0, -1.0, 0.0], [0.0, 1.0, 1.0]]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_class_soft_loss_is_the_mean_kl_times_t_squared(temperature):
    expected = sum(kl_by_hand(s, t, temperature) for s, t in zip(STUDENT, TEACHER)) / 2
    loss = class_soft_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert class_soft_loss(torch.tensor(TEACHER), torch.tensor(TEACHER), temperature).item() == pytest.approx(0.0)


def test_class_soft_loss_value_at_t2_by_hand():
    # row 0 at T=2: p = softmax(1, -0.5, 0), q = softmax(0.5, 0, -0.5); written out once to pin the formula
    p = [math.exp(1) / (math.exp(1) + math.exp(-0.5) + 1), math.exp(-0.5) / (math.exp(1) + math.exp(-0.5) + 1)]
    p.append(1 - sum(p))
    z = math.exp(0.5) + 1 + math.exp(-0.5)
    q = [math.exp(0.5) / z, 1 / z, math.exp(-0.5) / z]
    expected = 4 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = class_soft_loss(torch.tensor(STUDENT[:1]), torch.tensor(TEACHER[:1]), 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_regression_soft_loss_is_the_squared_error_to_the_teacher():
    student, teacher = torch.tensor([[1.0], [3.0], [2.5]]), torch.tensor([[2.0], [3.0], [0.5]])
    assert regression_soft_loss(student, teacher).item() == pytest.approx((1 + 0 + 4) / 3)


def test_token_soft_loss_covers_only_labelled_tokens():
    temperature = 2.0
    student = torch.tensor([[STUDENT[0], STUDENT[1], [9.0, 0.0, 0.0]], [STUDENT[1], [0.0, 0.0, 9.0], [5.0, 5.0, 5.0]]])
    teacher = torch.tensor([[TEACHER[0], TEACHER[1], [0.0, 0.0, 9.0]], [TEACHER[0], [9.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 2, -100], [1, -100, -100]])  # [CLS]/sub-token/padding positions are -100
    expected = (
        kl_by_hand(STUDENT[0], TEACHER[0], temperature)
        + kl_by_hand(STUDENT[1], TEACHER[1], temperature)
        + kl_by_hand(STUDENT[1], TEACHER[0], temperature)
    ) / 3  # the mean over the three labelled tokens, whatever the others hold
    loss = token_soft_loss(student, teacher, labels, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    nothing = token_soft_loss(student, teacher, torch.full_like(labels, -100), temperature)
    assert nothing.item() == 0.0  # no labelled token: 0, not NaN


def test_span_soft_loss_ignores_padding_positions():
    temperature = 2.0
    start_s, start_t = [1.0, 0.0, -1.0], [2.0, -1.0, 0.0]
    end_s, end_t = [0.5, 0.5, 2.0], [0.0, 1.0, 1.0]
    expected = (kl_by_hand(start_s, start_t, temperature) + kl_by_hand(end_s, end_t, temperature)) / 2
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    padded = [  # the same row with two padding positions holding anything
        torch.tensor([start_s + [7.0, -3.0]]),
        torch.tensor([end_s + [0.0, 9.0]]),
        torch.tensor([start_t + [-5.0, 4.0]]),
        torch.tensor([end_t + [3.0, 3.0]]),
    ]
    loss = span_soft_loss(*padded, mask, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unpadded = [t[:, :3] for t in padded]
    assert span_soft_loss(*unpadded, mask[:, :3], temperature).item() == pytest.approx(expected, rel=1e-5)


def test_hidden_soft_loss_is_one_minus_cosine_over_real_tokens():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_soft_loss(student, teacher, mask).item() == pytest.approx((0.0 + 1.0) / 2)
