"""`topk_kl_loss`: the KL on the teacher's top-k support plus a tail bucket, against hand values and the full KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from distil.modules.losses import soft_target_loss, topk_kl_loss


def teacher_topk(teacher_logits: torch.Tensor, k: int, temperature: float):
    """(ids, log-probs, tail log-mass) of the teacher's top k at temperature T, as the cache stores them."""
    log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    values, ids = log_probs.topk(k, dim=-1)
    tail = log_probs.scatter(-1, ids, -math.inf).logsumexp(dim=-1)
    return ids, values, tail


def test_hand_computed_top_one_with_tail():
    # Teacher logits [0, 2 ln 2, 0] at T = 2 -> p = [1/4, 1/2, 1/4]: top-1 is id 1 (1/2), tail 1/2. Student uniform
    # over 3: q_1 = 1/3, q_tail = 2/3. KL = 1/2 ln(3/2) + 1/2 ln(3/4) = 1/2 ln(9/8); x T^2 = 2 ln(9/8).
    # Row 1: teacher logits [0, 0, ln 6] -> p = [1/8, 1/8, 3/4]; student logits [0, 0, 0] at T = 2 -> 1/3 each;
    # top-1 id 2 (3/4), tail 1/4 against 2/3: KL = 3/4 ln(9/4) + 1/4 ln(3/8), x 4.
    teacher = torch.tensor([[0.0, 2 * math.log(2.0), 0.0], [0.0, 0.0, 2 * math.log(6.0)]])
    student = torch.tensor([[5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    per_row = topk_kl_loss(student, *teacher_topk(teacher, 1, 2.0), temperature=2.0)
    expected = [2 * math.log(9 / 8), 4 * (0.75 * math.log(9 / 4) + 0.25 * math.log(3 / 8))]
    assert per_row.tolist() == pytest.approx(expected, abs=1e-6)


def test_k_equal_to_vocabulary_gives_the_exact_kl_and_smaller_k_a_lower_bound():
    generator = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(6, 11, generator=generator)
    student = 3 * torch.randn(6, 11, generator=generator)
    full = soft_target_loss(student, teacher, 1.5)
    exact = topk_kl_loss(student, *teacher_topk(teacher, 11, 1.5), temperature=1.5)
    assert exact.tolist() == pytest.approx(full.tolist(), rel=1e-5, abs=1e-6)
    previous = torch.zeros(6)
    for k in (1, 3, 8, 10):  # coarser supports lose information: the KL grows with k up to the full one
        approximation = topk_kl_loss(student, *teacher_topk(teacher, k, 1.5), temperature=1.5)
        assert (approximation <= full + 1e-5).all() and (approximation >= previous - 1e-5).all(), k
        if k == 1:
            assert (approximation < full - 1e-2).all()  # one id and the tail miss much of every random row
        previous = approximation
    assert previous.tolist() == pytest.approx(full.tolist(), rel=1e-5)  # a tail of one id is exact


def test_gradients_equal_the_full_kl_at_k_equal_to_vocabulary():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 7, generator=generator)
    student = torch.randn(4, 7, generator=generator, requires_grad=True)
    topk_kl_loss(student, *teacher_topk(teacher, 7, 2.0), temperature=2.0).sum().backward()
    cached_grad, student.grad = student.grad.clone(), None
    soft_target_loss(student, teacher, 2.0).sum().backward()
    assert torch.isfinite(cached_grad).all()
    assert torch.allclose(cached_grad, student.grad, atol=1e-6)
