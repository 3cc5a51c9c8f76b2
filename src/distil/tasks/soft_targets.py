"""The soft-target losses of task distillation: pure tensor functions, each a mean over the rows it covers.

The student learns the task's hard labels (the loss its Hugging Face head computes) plus these terms against a
teacher already fine-tuned on the task. The KL terms reuse the pre-training objective's `soft_target_loss`
(KL(teacher || student) of the softmax at temperature T, times T^2, per row).
"""

from __future__ import annotations

import torch

from distil.modules.losses import IGNORE_INDEX, cosine_hidden_loss, soft_target_loss

NO_POSITION = -1e9  # logit of a padding position: probability exactly 0 at any T, finite (no 0 x inf in the KL)


def class_soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sequence classification: KL x T^2 between the (B, C) class logits, averaged over the B examples."""
    return soft_target_loss(student_logits, teacher_logits, temperature).mean()


def regression_soft_loss(student_prediction: torch.Tensor, teacher_prediction: torch.Tensor) -> torch.Tensor:
    """Regression (one output): squared error to the teacher's prediction, averaged over the examples (B, 1)."""
    return (student_prediction.float() - teacher_prediction.float()).square().mean()


def token_soft_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Token classification: KL x T^2 per token between (B, L, C) logits, averaged over the labelled tokens.

    Tokens whose label is -100 (special tokens, padding, the later sub-tokens of a word) carry no loss, as in the
    hard-label loss; 0 when a batch has no labelled token.
    """
    labelled = labels != IGNORE_INDEX
    if not labelled.any():
        return student_logits.sum() * 0.0
    return soft_target_loss(student_logits[labelled], teacher_logits[labelled], temperature).mean()


def span_soft_loss(
    student_start: torch.Tensor,
    student_end: torch.Tensor,
    teacher_start: torch.Tensor,
    teacher_end: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Extractive QA: KL x T^2 between the distributions over start positions and over end positions (B, L), the
    mean of the two, averaged over the examples. Padding positions (attention mask 0) are left out of both softmaxes,
    so a batch's padding does not change the loss."""
    padding = attention_mask == 0

    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = student.float().masked_fill(padding, NO_POSITION)
        teacher = teacher.float().masked_fill(padding, NO_POSITION)
        return soft_target_loss(student, teacher, temperature)

    return ((kl(student_start, teacher_start) + kl(student_end, teacher_end)) / 2).mean()


def hidden_soft_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """1 - cos between the (B, L, H) last hidden states of student and teacher, averaged over the real tokens."""
    real = attention_mask.bool()
    return cosine_hidden_loss(student_hidden[real], teacher_hidden[real]).mean()
