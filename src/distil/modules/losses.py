"""The distillation loss terms: pure tensor functions, one loss per row.

Each function takes already-selected rows (one row per token position the term covers) and returns the loss of each
row, shape (N,). The objective (`objective.py`) averages them over the rows a term covers and weights them, on all
rows at once or chunk by chunk (`chunked_vocab_loss.py`): both call these same functions, and the chunked path gets
its gradients from autograd over them. To add a term, write its function here and give it to the objective.
"""

from __future__ import annotations

import math

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
