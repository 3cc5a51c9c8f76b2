"""Each loss term against values computed by hand: one loss per row."""

import math

import pytest
import torch
import torch.nn.functional as F

from distil.modules.losses import (
    cosine_hidden_loss,
    generalized_jsd_loss,
    logits_mse_loss,
    mlm_loss,
    reverse_kl_loss,
    soft_target_loss,
)

# Row 0 of the hand computations: teacher logits [0, 2 ln 2, 0] at T = 2 -> p_t = [1/4, 1/2, 1/4]; student uniform.
HAND_TEACHER = torch.tensor([[0.0, 2 * math.log(2.0), 0.0], [1.0, 2.0, 3.0]])
HAND_STUDENT = torch.tensor([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])


def test_soft_target_loss_hand_computed_with_temperature_squared():
    # Row 0: teacher logits [0, 2 ln 2, 0] at T=2 -> p_t = [1/4, 1/2, 1/4]; student uniform -> p_s = 1/3 each.
    #   KL = 2 * 1/4 ln(3/4) + 1/2 ln(3/2) = 1/2 ln(9/8); times T^2 = 4 -> 2 ln(9/8).  Row 1: identical, KL = 0.
    teacher = torch.tensor([[0.0, 2 * math.log(2.0), 0.0], [1.0, 2.0, 3.0]])
    student = torch.tensor([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
    per_row = soft_target_loss(student, teacher, temperature=2.0)
    assert per_row.tolist() == pytest.approx([2 * math.log(9 / 8), 0.0], abs=1e-6)


def test_soft_target_loss_scales_kl_by_temperature_squared():
    torch.manual_seed(0)
    student, teacher = torch.randn(7, 11), torch.randn(7, 11)
    for temperature in (1.0, 3.0):
        kl = F.kl_div(
            F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean"
        )
        expected = kl.item() * temperature**2
        assert soft_target_loss(student, teacher, temperature).mean().item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_loss_is_zero_for_identical_logits():
    logits = torch.randn(4, 9)
    assert soft_target_loss(logits, logits.clone(), temperature=4.0).abs().max().item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_kl_hand_computed_with_temperature_squared():
    # KL(p_s || p_t) = 1/3 (ln(4/3) + ln(2/3) + ln(4/3)) = 1/3 ln(32/27); times T^2 = 4.  Row 1: identical, 0.
    per_row = reverse_kl_loss(HAND_STUDENT, HAND_TEACHER, temperature=2.0)
    assert per_row.tolist() == pytest.approx([4 / 3 * math.log(32 / 27), 0.0], abs=1e-6)


def test_generalized_jsd_hand_computed_at_beta_one_half():
    # M = (p_t + p_s) / 2 = [7/24, 5/12, 7/24].  KL(p_t || M) = 1/2 ln(6/7) + 1/2 ln(6/5);
    # KL(p_s || M) = 2/3 ln(8/7) + 1/3 ln(4/5); JSD = (KL(p_t || M) + KL(p_s || M)) / 2, times T^2 = 4.
    kl_teacher = 0.5 * math.log(6 / 7) + 0.5 * math.log(6 / 5)
    kl_student = 2 / 3 * math.log(8 / 7) + 1 / 3 * math.log(4 / 5)
    per_row = generalized_jsd_loss(HAND_STUDENT, HAND_TEACHER, beta=0.5, temperature=2.0)
    assert per_row.tolist() == pytest.approx([4 * (kl_teacher + kl_student) / 2, 0.0], abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_is_trls_definition_on_probabilities(beta):
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 13), torch.randn(5, 13)
    p_s, p_t = F.softmax(student / 1.5, -1).double(), F.softmax(teacher / 1.5, -1).double()
    mixture = beta * p_t + (1 - beta) * p_s  # TRL: beta weighs the teacher in the mixture and KL(teacher || M)
    expected = beta * (p_t * (p_t / mixture).log()).sum(-1) + (1 - beta) * (p_s * (p_s / mixture).log()).sum(-1)
    got = generalized_jsd_loss(student, teacher, beta, temperature=1.5)
    torch.testing.assert_close(got.double(), expected * 1.5**2, rtol=1e-5, atol=1e-7)
    assert (got <= math.log(2) * 1.5**2 + 1e-6).all()  # a JSD is bounded by ln 2 (times T^2)


def test_generalized_jsd_tends_to_the_forward_kl_near_0_and_the_reverse_kl_near_1():
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 9), torch.randn(6, 9)
    small = 1e-4
    forward, reverse = soft_target_loss(student, teacher, 1.0), reverse_kl_loss(student, teacher)
    near_0 = generalized_jsd_loss(student, teacher, small) / small
    near_1 = generalized_jsd_loss(student, teacher, 1 - small) / small
    torch.testing.assert_close(near_0, forward, rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(near_1, reverse, rtol=1e-2, atol=1e-4)


def test_mlm_loss_hand_computed_and_zero_at_unmasked_rows():
    # p(label) = 3 / (1 + 3) -> CE = ln(4/3); second row p(label 0) = 1/2 -> ln 2; third row not masked -> 0.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [9.0, -9.0]])
    labels = torch.tensor([1, 0, -100])
    assert mlm_loss(logits, labels).tolist() == pytest.approx([math.log(4 / 3), math.log(2), 0.0], rel=1e-6)


def test_cosine_hidden_loss_hand_computed():
    # orthogonal -> 1 - 0 = 1; parallel -> 0; opposite -> 2.
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    teacher = torch.tensor([[0.0, 3.0], [2.0, 2.0], [-4.0, 0.0]])
    assert cosine_hidden_loss(student, teacher).tolist() == pytest.approx([1.0, 0.0, 2.0], abs=1e-6)


def test_logits_mse_sums_the_vocabulary_per_row():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    # row sums of squared errors: 1 + 4 = 5 and 9
    assert logits_mse_loss(student, teacher).tolist() == pytest.approx([5.0, 9.0])
