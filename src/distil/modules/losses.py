"""The DistilBERT loss terms: tensors in, scalar out.

Each function takes already-selected rows (one row per token position that the term covers), so the caller decides
which positions a term sees (all non-padding positions, or only the masked ones) and pays for the vocabulary
projection only there. All of them average over the rows they are given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between softmax(z / T) distributions, times T^2, averaged over rows.

    Args:
        student_logits, teacher_logits: (N, V) logits at the N positions the term covers.
        temperature: T > 0. The T^2 factor keeps gradient magnitudes comparable across temperatures
            (Hinton et al. 2015), as in DistilBERT's `KLDivLoss(reduction="batchmean") * T**2`.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
    return kl / student_logits.shape[0] * temperature**2


def mlm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's predictions against the original tokens at the masked positions.

    Args:
        student_logits: (N, V) logits at the N masked positions.
        labels: (N,) original token ids.
    """
    return F.cross_entropy(student_logits.float(), labels)


def cosine_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over rows: aligns the directions of the last hidden states.

    Equals `CosineEmbeddingLoss` with target +1, as DistilBERT used. Args are (N, H) hidden states.
    """
    return (1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)).mean()


def logits_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared error between logits, summed over the vocabulary and averaged over rows (DistilBERT's `alpha_mse`)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float(), reduction="sum") / student_logits.shape[0]
