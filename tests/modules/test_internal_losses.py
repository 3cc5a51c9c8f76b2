"""The terms that compare the models' insides (hidden states, attention maps, MiniLM v2's self-attention relations)
against references written out here with plain loops: one loss per row, or per query position."""

import math

import pytest
import torch

from distil.modules.losses import (
    attention_kl_loss,
    attention_log_probs,
    hidden_mse_loss,
    relation_kl_loss,
    relation_log_probs,
)

BATCH, LENGTH = 2, 5
KEY_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)  # row 1 ends in 2 padding tokens
ALLOWED = KEY_MASK[:, None, None, :]  # every query sees the real keys of its row, (B, 1, 1, L)


def states(generator: torch.Generator, heads: int, size: int, kinds: int = 3) -> list[torch.Tensor]:
    """`kinds` random (B, heads, L, size) tensors (queries, keys, values)."""
    return [torch.randn(BATCH, heads, LENGTH, size, generator=generator) for _ in range(kinds)]


def split_heads(features: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, F) concatenated head vectors -> (B, heads, L, F / heads), as an attention layer splits them."""
    batch, length, width = features.shape
    return features.view(batch, length, heads, width // heads).transpose(1, 2)


def reference_softmax(scores: list[float], allowed: list[bool]) -> list[float]:
    """softmax over the allowed entries; 0 elsewhere."""
    top = max(s for s, a in zip(scores, allowed) if a)
    weights = [math.exp(s - top) if a else 0.0 for s, a in zip(scores, allowed)]
    return [w / sum(weights) for w in weights]


def reference_kl(p_teacher: list[float], p_student: list[float]) -> float:
    """sum over keys of p_t (log p_t - log p_s), keys where p_t = 0 adding nothing."""
    return sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_teacher, p_student) if t > 0)


def reference_relation(state: torch.Tensor, relation_heads: int, batch: int, head: int, query: int) -> list[float]:
    """One query row of one relation head: the concatenated features sliced to the head's share, scaled dot products
    x_i . x_j / sqrt(share) with every key of the row, softmax over the real keys."""
    features = state[batch].transpose(0, 1).reshape(LENGTH, -1).double()  # (L, H x d): the heads side by side
    share = features.shape[1] // relation_heads
    x = features[:, head * share : (head + 1) * share]
    scores = [float(x[query] @ x[key]) / math.sqrt(share) for key in range(LENGTH)]
    return reference_softmax(scores, KEY_MASK[batch].tolist())


def reference_relation_loss(student, teacher, relation_heads: int) -> torch.Tensor:
    """MiniLM v2 per query row, (B, L) (NaN at padding queries, which the reference leaves out): for each kind, the
    KL(teacher || student) of each relation head, averaged over the heads; the kinds summed."""
    loss = torch.full((BATCH, LENGTH), float("nan"), dtype=torch.float64)
    for b in range(BATCH):
        for i in range(LENGTH):
            if not KEY_MASK[b, i]:
                continue
            total = 0.0
            for s, t in zip(student, teacher):
                kls = [
                    reference_kl(
                        reference_relation(t, relation_heads, b, r, i), reference_relation(s, relation_heads, b, r, i)
                    )
                    for r in range(relation_heads)
                ]
                total += sum(kls) / relation_heads
            loss[b, i] = total
    return loss


@pytest.mark.parametrize("relation_heads", [2, 4])
def test_relation_kl_loss_equals_a_loop_reference_with_padding(relation_heads):
    """`relation_kl_loss` at every real query row equals the loop reference, for a student (2 heads of 8) narrower
    than its teacher (4 heads of 8): each model's relation heads have their own width and scale, and padding keys
    take no share of the softmax."""
    generator = torch.Generator().manual_seed(relation_heads)
    student, teacher = states(generator, heads=2, size=8), states(generator, heads=4, size=8)
    got = relation_kl_loss(student, teacher, relation_heads, ALLOWED, ALLOWED)
    expected = reference_relation_loss(student, teacher, relation_heads)
    assert got.shape == (BATCH, LENGTH)
    torch.testing.assert_close(got[KEY_MASK].double(), expected[KEY_MASK], atol=1e-5, rtol=1e-5)
    assert (got[KEY_MASK] > 1e-3).all()  # a real difference, not two zeros agreeing


def test_relation_kl_loss_is_zero_for_equal_states_and_positive_otherwise():
    """The student's own states as the teacher's give 0 at every row (padding ones too); other states give > 0 at
    every real row."""
    generator = torch.Generator().manual_seed(0)
    student, other = states(generator, heads=4, size=8), states(generator, heads=4, size=8)
    same = relation_kl_loss(student, [s.clone() for s in student], 4, ALLOWED, ALLOWED)
    assert same.abs().max().item() == pytest.approx(0.0, abs=1e-6)
    different = relation_kl_loss(student, other, 4, ALLOWED, ALLOWED)
    assert (different[KEY_MASK] > 1e-3).all()


def test_relation_kl_loss_depends_on_the_concatenated_vectors_not_the_attention_heads():
    """The same concatenated vectors split into 4 heads of 8, 2 of 16 or 8 of 4 (student: 32 features) and 4 of 16,
    8 of 8 or 2 of 32 (teacher: 64 features) give the same loss; the number of relation heads does change it."""
    generator = torch.Generator().manual_seed(1)
    student = [torch.randn(BATCH, LENGTH, 32, generator=generator) for _ in range(3)]
    teacher = [torch.randn(BATCH, LENGTH, 64, generator=generator) for _ in range(3)]

    def loss(student_heads: int, teacher_heads: int, relation_heads: int = 4) -> torch.Tensor:
        return relation_kl_loss(
            [split_heads(s, student_heads) for s in student],
            [split_heads(t, teacher_heads) for t in teacher],
            relation_heads,
            ALLOWED,
            ALLOWED,
        )

    base = loss(4, 4)
    for student_heads, teacher_heads in [(2, 8), (8, 2), (4, 1), (1, 4)]:
        torch.testing.assert_close(loss(student_heads, teacher_heads), base, atol=1e-6, rtol=1e-6)
    one_relation_head = loss(4, 4, relation_heads=1)
    assert (one_relation_head - base)[KEY_MASK].abs().max().item() > 1e-2
    # the relation itself, not just the loss: head r of R = 4 is the softmax over features [8r, 8r + 8) of the student
    for heads in (1, 2, 8):
        torch.testing.assert_close(
            relation_log_probs(split_heads(student[0], heads), 4, ALLOWED),
            relation_log_probs(split_heads(student[0], 4), 4, ALLOWED),
        )


def test_attention_log_probs_hand_computed_with_a_masked_key():
    """One head, d = 1, scaling 1: a query of 1 against keys 0, ln 2, ln 3 gives [1/6, 1/3, 1/2]; the last key
    masked gives [1/3, 2/3, 0] (exactly 0); a scaling of 2 squares the weights: [1, 4, 9] / 14."""
    query = torch.ones(1, 1, 3, 1)
    key = torch.tensor([0.0, math.log(2.0), math.log(3.0)]).view(1, 1, 3, 1)
    every = torch.ones(3, 3, dtype=torch.bool)
    probs = attention_log_probs(query, key, every, 1.0).exp()
    assert probs[0, 0, 0].tolist() == pytest.approx([1 / 6, 1 / 3, 1 / 2], abs=1e-6)
    masked = attention_log_probs(query, key, torch.tensor([True, True, False]), 1.0).exp()
    assert masked[0, 0, :, :2].flatten().tolist() == pytest.approx([1 / 3, 2 / 3] * 3, abs=1e-6)
    assert (masked[..., 2] == 0).all()
    scaled = attention_log_probs(query, key, every, 2.0).exp()
    assert scaled[0, 0, 0].tolist() == pytest.approx([1 / 14, 4 / 14, 9 / 14], abs=1e-6)


def test_attention_kl_loss_hand_computed_and_averaged_over_heads():
    """Teacher [1/6, 1/3, 1/2] against a uniform student: KL = 1/6 ln(1/2) + 1/2 ln(3/2); a second head where the
    two agree halves it (the heads are averaged, not summed). Equal maps give 0."""
    teacher = torch.tensor([1 / 6, 1 / 3, 1 / 2]).log().expand(1, 1, 3, 3)
    uniform = torch.full((1, 1, 3, 3), 1 / 3).log()
    kl = -math.log(2) / 6 + math.log(1.5) / 2
    assert attention_kl_loss(uniform, teacher)[0].tolist() == pytest.approx([kl] * 3, abs=1e-6)
    two_heads = attention_kl_loss(torch.cat([uniform, teacher], dim=1), torch.cat([teacher, teacher], dim=1))
    assert two_heads[0].tolist() == pytest.approx([kl / 2] * 3, abs=1e-6)
    assert attention_kl_loss(teacher, teacher.clone()).abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_attention_kl_loss_with_grouped_query_keys_equals_a_loop_reference():
    """4 query heads over 2 key heads (head h reads key head h // 2, as Llama's `repeat_kv`): the attention maps
    equal a loop reference and the maps of the key heads repeated by hand, and the KL per query row equals the loop
    reference's at the real rows; padding keys get probability exactly 0."""
    generator = torch.Generator().manual_seed(2)
    q_s, q_t = (torch.randn(BATCH, 4, LENGTH, 8, generator=generator) for _ in range(2))
    k_s, k_t = (torch.randn(BATCH, 2, LENGTH, 8, generator=generator) for _ in range(2))
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    allowed = ALLOWED & causal
    scaling = 8**-0.5
    student = attention_log_probs(q_s, k_s, allowed, scaling)
    teacher = attention_log_probs(q_t, k_t, allowed, scaling)

    by_hand = torch.cat([k_s[:, [0]], k_s[:, [0]], k_s[:, [1]], k_s[:, [1]]], dim=1)
    torch.testing.assert_close(attention_log_probs(q_s, by_hand, allowed, scaling), student)
    probs = student.exp()
    assert (probs.expand(BATCH, 4, LENGTH, LENGTH)[~allowed.expand(BATCH, 4, LENGTH, LENGTH)] == 0).all()

    loss = attention_kl_loss(student, teacher)
    for b in range(BATCH):
        for i in range(LENGTH):
            if not KEY_MASK[b, i]:
                continue
            row_allowed = allowed[b, 0, i].tolist()
            kls = []
            for h in range(4):
                maps = []
                for q, k in ((q_t, k_t), (q_s, k_s)):
                    scores = [float(q[b, h, i].double() @ k[b, h // 2, j].double()) * scaling for j in range(LENGTH)]
                    maps.append(reference_softmax(scores, row_allowed))
                assert probs[b, h, i].tolist() == pytest.approx(maps[1], abs=1e-6)
                kls.append(reference_kl(*maps))
            assert loss[b, i].item() == pytest.approx(sum(kls) / 4, abs=1e-5)


def test_attention_terms_stay_finite_where_a_query_sees_no_key():
    """A left-padded causal row has a padding query that sees no key at all: the maps and the KL stay finite there
    (no NaN from -inf - -inf) and so do the gradients, and the real rows do not depend on the padding keys' vectors."""
    generator = torch.Generator().manual_seed(3)
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)  # row 1: left padding
    allowed = key_mask[:, None, None, :] & torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    assert not allowed[1, 0, 0].any()  # query 0 of row 1 has no key to attend to
    query = torch.randn(BATCH, 4, LENGTH, 8, generator=generator, requires_grad=True)
    key = torch.randn(BATCH, 4, LENGTH, 8, generator=generator)
    teacher = attention_log_probs(
        *(torch.randn(BATCH, 4, LENGTH, 8, generator=generator) for _ in range(2)), allowed, 0.5
    )
    loss = attention_kl_loss(attention_log_probs(query, key, allowed, 0.5), teacher)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(query.grad).all()

    moved = key.clone()
    moved[1, :, :2] += 100.0  # the padding keys of row 1
    moved_loss = attention_kl_loss(attention_log_probs(query, moved, allowed, 0.5), teacher)
    real_queries = key_mask & allowed.any(dim=-1)[:, 0]
    torch.testing.assert_close(moved_loss[real_queries], loss[real_queries])

    relations = relation_kl_loss([query], [query.detach() + 1.0], 2, allowed, allowed)
    assert torch.isfinite(relations).all()


def test_hidden_mse_loss_hand_computed_and_gradients_reach_the_projection():
    """Mean over the width of the squared error, per row; through a linear projection of the student's states to
    the teacher's width, the projection's weight gets the gradient 2 / (N H) (W x + b - t)^T x of the mean loss."""
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert hidden_mse_loss(student, teacher).tolist() == pytest.approx([(1 + 4) / 2, (9 + 16) / 2])

    torch.manual_seed(4)
    projection = torch.nn.Linear(16, 32)
    hidden, target = torch.randn(6, 16), torch.randn(6, 32)
    hidden_mse_loss(projection(hidden), target).mean().backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().max() > 0
    error = (projection(hidden) - target).detach()
    torch.testing.assert_close(projection.weight.grad, 2 / error.numel() * error.T @ hidden)
    torch.testing.assert_close(projection.bias.grad, 2 / error.numel() * error.sum(dim=0))
