"""The distillation loss terms: pure tensor functions, one loss per row.

Each function takes already-selected rows (one row per token position the term covers) and returns the loss of each
row, shape (N,); the attention and relation terms take a layer's (B, H, L, d) states and return (B, L), one loss per
query position. The objective (`objective.py`) averages them over the rows a term covers and weights them, on all
rows at once or chunk by chunk (`chunked_vocab_loss.py`): both call these same functions, and the chunked path gets
its gradients from autograd over them. To add a term, write its function here and give it to the objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of rows that are not masked


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between softmax(z / T) distributions, times T^2, per row.

    Args:
        student_logits, teacher_logits: (N, V) logits at the N positions the term covers.
        temperature: T > 0. The T^2 factor keeps gradient magnitudes comparable across temperatures
            (Hinton et al. 2015); averaged over rows this is DistilBERT's `KLDivLoss(reduction="batchmean") * T**2`.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    return kl.sum(dim=-1) * temperature**2


def topk_kl_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_log_probs: torch.Tensor,
    tail_log_prob: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) on the teacher's top-k support plus one tail bucket, times T^2, per row: the soft-target
    term from a cache of the teacher's top-k outputs (`distil.topk_cache`).

        sum_i p_i (log p_i - log q_i) + p_tail (log p_tail - log q_tail),   q = softmax(student / T)

    over the k ids i the teacher ranks highest, with p_tail the teacher's mass outside them and q_tail the student's.
    This is the KL between the two distributions coarsened to k + 1 outcomes (the tail ids merged into one): a lower
    bound of the full KL that misses only how each model spreads its tail mass, and equals it when k = V (tail mass 0;
    `soft_target_loss`). The teacher's log-probabilities were taken at the same temperature T.

    Args:
        student_logits: (N, V) logits.
        topk_ids: (N, k) the teacher's top-k ids per row (any integer dtype).
        topk_log_probs: (N, k) the teacher's log-probabilities of those ids at temperature T.
        tail_log_prob: (N,) log of the teacher's probability outside them (-inf when there is none).
        temperature: T > 0.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ids = topk_ids.long()
    teacher_log_probs = topk_log_probs.float()
    head = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs.gather(-1, ids))).sum(dim=-1)
    lowest = torch.finfo(student_log_probs.dtype).min  # finite, so rows without a tail keep finite gradients
    student_tail = student_log_probs.scatter(-1, ids, lowest).logsumexp(dim=-1)
    tail = tail_log_prob.float()
    has_tail = tail > -math.inf
    teacher_tail = torch.where(has_tail, tail, 0.0)
    tail_term = torch.where(has_tail, teacher_tail.exp() * (teacher_tail - student_tail), 0.0)
    return (head + tail_term) * temperature**2


def reverse_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(student || teacher) between softmax(z / T) distributions, times T^2, per row: mode-seeking (the student
    puts its mass where the teacher's is high), where the forward KL of `soft_target_loss` covers all of the
    teacher's distribution. `labels` is taken and not read, so that a `LogitsTerm` holds the function as it is."""
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    return kl.sum(dim=-1) * temperature**2


def generalized_jsd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float = 1.0
) -> torch.Tensor:
    """The generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024) between softmax(z / T) distributions,
    times T^2, per row, with TRL's `beta` convention:

        M = beta * teacher + (1 - beta) * student
        JSD(beta) = beta * KL(teacher || M) + (1 - beta) * KL(student || M)

    0 < beta < 1. Near 0 it behaves like beta x the forward KL(teacher || student), near 1 like (1 - beta) x the
    reverse KL(student || teacher); beta = 0.5 is the symmetric Jensen-Shannon divergence (bounded by log 2). TRL's
    `GKDTrainer` takes beta = 0 and 1 to mean those two KLs outright: here they are `soft_target_loss` and
    `reverse_kl_loss`.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    mixture_log_probs = torch.logaddexp(student_log_probs + math.log1p(-beta), teacher_log_probs + math.log(beta))
    kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(dim=-1)
    kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True).sum(dim=-1)
    return (beta * kl_teacher + (1 - beta) * kl_student) * temperature**2


def mlm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's predictions against the labels, per row (0 where the label is -100): the
    masked-LM loss (labels: the original tokens at masked rows) and the causal LM's next-token loss (labels: the
    next token, already shifted by the collator) alike.

    Args:
        student_logits: (N, V) logits.
        labels: (N,) target token ids, -100 at rows without a target.
    """
    return F.cross_entropy(student_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")


def cosine_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """1 - cos(student, teacher) per row: aligns the directions of the last hidden states.

    Averaged over rows this is `CosineEmbeddingLoss` with target +1, as DistilBERT used. Args are (N, H) hidden states.
    """
    return 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)


def logits_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared error between logits summed over the vocabulary, per row (DistilBERT's `alpha_mse` term)."""
    return (student_logits.float() - teacher_logits.float()).square().sum(dim=-1)


def hidden_mse_loss(projected_student: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's hidden states, projected to the teacher's width, and the teacher's,
    per row (TinyBERT's hidden-state and embedding terms). Args are (N, H_teacher)."""
    return (projected_student.float() - teacher_hidden.float()).square().mean(dim=-1)


def attention_log_probs(query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor, scaling: float) -> torch.Tensor:
    """Log attention distributions of every head, (B, H, L, L): log softmax(q k^T x scaling) over the allowed keys.

    Args:
        query: (B, H, L, d); key: (B, H_kv, L, d), each key head shared by H / H_kv query heads (grouped-query).
        allowed: bool, broadcastable to (B, H, L, L): the keys each query attends to. A key that is not allowed gets
            the dtype's lowest value rather than -inf, so that its probability is 0 and KL terms stay finite.
    """
    key = key.float().repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = query.float() @ key.transpose(-1, -2) * scaling
    return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).log_softmax(dim=-1)


def attention_kl_loss(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between the attention distributions of each head, averaged over the heads, per query
    row: (B, H, L, L) log probabilities of the same number of heads -> (B, L) (MiniLM v1; TinyBERT matches the same
    maps by MSE on their scores)."""
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    return kl.sum(dim=-1).mean(dim=1)


def relation_log_probs(states: torch.Tensor, relation_heads: int, allowed: torch.Tensor) -> torch.Tensor:
    """MiniLM v2's self-attention relation of one kind (queries, keys or values) of a layer, (B, R, L, L).

    The attention heads' vectors are concatenated, (B, H, L, d) -> (B, L, H x d), and split again into `relation_heads`
    (R) heads of H x d / R features; each relation head's relation is log softmax(x x^T / sqrt(H x d / R)) over the
    allowed keys. It depends on the concatenated vectors only, not on how the model splits them into attention heads,
    so teacher and student may have any head counts and widths that R divides.
    """
    batch, heads, length, size = states.shape
    split = states.transpose(1, 2).reshape(batch, length, relation_heads, heads * size // relation_heads)
    split = split.transpose(1, 2)
    return attention_log_probs(split, split, allowed, (heads * size // relation_heads) ** -0.5)


def relation_kl_loss(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    relation_heads: int,
    student_allowed: torch.Tensor,
    teacher_allowed: torch.Tensor,
) -> torch.Tensor:
    """MiniLM v2's loss, per query row (B, L): for each kind of state given (queries, keys, values: the paper's
    query-query, key-key and value-value relations), KL(teacher relation || student relation) averaged over the
    relation heads, summed over the kinds.

    Args:
        student_states, teacher_states: the same kinds in the same order, each (B, H, L, d) with the model's own
            head count and size.
        relation_heads: R, dividing every kind's H x d.
        student_allowed, teacher_allowed: each model's allowed keys (`attention_log_probs`).
    """
    return sum(
        attention_kl_loss(
            relation_log_probs(student, relation_heads, student_allowed),
            relation_log_probs(teacher, relation_heads, teacher_allowed),
        )
        for student, teacher in zip(student_states, teacher_states, strict=True)
    )
