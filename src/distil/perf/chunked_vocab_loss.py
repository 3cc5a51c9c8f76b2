"""The vocabulary-level objective a chunk of rows at a time, so that the logits of all rows are never held at once.

With `kl_positions=all` the logits of every token would hold B x L x V numbers per model (2 GB per model in bf16, 4 GB
in fp32, at 256 x 128 tokens and BERT's 30522 words; XLM-R's 250k words make it 8 times more), plus the softmax
intermediates autograd keeps for backward. Here each chunk of rows is projected by the student and the objective of
`objective.py` is computed on it, with the teacher's side of those rows (its logits projected there, or a cache's
outputs), and differentiated by autograd at once, in the forward pass; the gradients for the student's features,
projection weight and bias are accumulated and the chunk's logits are freed, so at most `chunk_rows x V` logits (and
their autograd intermediates) exist at any time. Backward only scales the accumulated
gradients by the incoming gradient. No gradient formula is written by hand: a new loss term works here unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from distil.modules.teacher_targets import TeacherTargets

ChunkObjective = Callable[
    [torch.Tensor, torch.Tensor | None, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]
]  # (student_logits, teacher_logits, labels, rows, masked_rows) -> (total, contributions): `weighted_logits_loss`


class ChunkedLogitsLoss(torch.autograd.Function):
    """Forward: the objective and its gradients, chunk by chunk (autograd inside); backward: scale the gradients."""

    @staticmethod
    def forward(
        ctx,
        student_features: torch.Tensor,
        student_weight: torch.Tensor,
        student_bias: torch.Tensor,
        teacher: TeacherTargets | None,
        labels: torch.Tensor,
        masked_rows: int,
        chunk_rows: int,
        objective: ChunkObjective,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device_type = student_features.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else student_features.dtype
        rows = student_features.shape[0]
        with_grad = any(ctx.needs_input_grad[:3])
        with torch.autocast(device_type, enabled=False):
            weight = student_weight.detach().to(dtype).requires_grad_(with_grad)
            bias = student_bias.detach().float().requires_grad_(with_grad)  # fp32: its gradient sums many rows
            teacher = teacher.to(dtype) if teacher is not None else None
            grad_features = torch.empty_like(student_features) if with_grad else None
            grad_weight = torch.zeros_like(student_weight, dtype=torch.float32) if with_grad else None
            grad_bias = torch.zeros_like(student_bias, dtype=torch.float32) if with_grad else None
            total, contributions = student_features.new_zeros((), dtype=torch.float32), None
            for start in range(0, max(rows, 1), chunk_rows):  # one empty chunk when no row is selected
                stop = min(start + chunk_rows, rows)
                features = student_features[start:stop].detach().to(dtype).requires_grad_(with_grad)
                teacher_logits = teacher.rows(start, stop) if teacher is not None else None
                with torch.set_grad_enabled(with_grad):
                    student_logits = F.linear(features, weight).float() + bias
                    chunk_total, chunk_contributions = objective(
                        student_logits, teacher_logits, labels[start:stop], rows, masked_rows
                    )
                if with_grad:
                    chunk_grads = torch.autograd.grad(chunk_total, (features, weight, bias))
                    grad_features[start:stop] = chunk_grads[0]
                    grad_weight += chunk_grads[1]
                    grad_bias += chunk_grads[2]
                total = total + chunk_total.detach()
                chunk_contributions = chunk_contributions.detach()
                contributions = chunk_contributions if contributions is None else contributions + chunk_contributions
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        ctx.mark_non_differentiable(contributions)
        return total, contributions

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, _grad_contributions: torch.Tensor):
        grads = [None if g is None else g * grad_total.to(g.dtype) for g in ctx.saved_tensors]
        return (*grads, None, None, None, None, None)


def chunked_logits_loss(
    student_features: torch.Tensor,
    student_projection: tuple[torch.Tensor, torch.Tensor],
    teacher: TeacherTargets | None,
    labels: torch.Tensor,
    masked_rows: int,
    chunk_rows: int,
    objective: ChunkObjective,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective over all rows without ever holding all their logits.

    Args:
        student_features: (N, H) head features (the head before its output projection) of the N selected rows.
        student_projection: (weight (V, H), bias (V,)) of the student's output projection.
        teacher: what the terms read of the teacher at those rows, a chunk at a time
            (`distil.modules.teacher_targets`: the live teacher's logits or a cache's outputs); None when no term
            reads the teacher.
        labels: (N,) original ids at the masked rows among the N, -100 elsewhere.
        masked_rows: number of masked rows among the N (a host int, so no device sync is needed).
        chunk_rows: rows projected at a time (>= 1: `StepSpeed.vocab_chunk_rows`, checked there).
        objective: `weighted_logits_loss` with its terms bound (or a compiled version of it).

    Returns (total, contributions) as the objective returns them for all N rows at once; only the total is
    differentiable.
    """
    return ChunkedLogitsLoss.apply(
        student_features,
        *student_projection,
        teacher,
        labels,
        masked_rows,
        chunk_rows,
        objective,
    )
