"""Vocabulary projection fused with the losses that read its logits, a chunk of rows at a time.

With `kl_positions=all` the logits of every token would hold B x L x V numbers per model (2 GB per model in bf16, 4 GB
in fp32, at 256 x 128 tokens and BERT's 30522 words), plus the softmax intermediates autograd keeps for backward.
Here each chunk of rows is projected by both models, its loss terms and the gradient of the weighted loss with
respect to its student logits are computed at once, and that gradient is multiplied straight back into gradients for
the student's features, projection weight and bias. The chunk's logits are then freed: at most `chunk_rows x V`
logits exist at any time. Backward only scales the stored gradients by the incoming gradient.

The terms and their normalisation are those of `losses.py`: soft-target KL x T^2 and logits MSE averaged over all
given rows, masked-LM cross-entropy averaged over the rows whose label is not -100.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass(frozen=True)
class VocabLossWeights:
    """What the fused loss computes: temperature T, the weight of each term, and rows per chunk."""

    temperature: float
    alpha_ce: float
    alpha_mlm: float
    alpha_mse: float
    chunk_rows: int


def chunk_loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    weights: VocabLossWeights,
    kl_scale: float,
    mlm_scale: float,
    mse_scale: float,
    with_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums of the KL, cross-entropy and squared-error terms over one chunk, and d(weighted loss)/d(student logits).

    Args:
        student_logits, teacher_logits: (C, V) logits of the chunk (teacher None when no term needs it).
        labels: (C,) original ids at masked rows, -100 elsewhere.
        kl_scale, mlm_scale, mse_scale: factor of each summed term in the weighted loss (alpha x T^2 / N, ...).
        with_grad: also return the gradient of the weighted loss with respect to `student_logits` and its bias.

    Returns (gradient (C, V) in the logits' dtype or None, fp32 bias gradient (V,) or None, KL sum, cross-entropy
    sum, squared-error sum); sums of absent terms are 0. Computing the bias gradient and the cast here lets a
    compiled version do them in the same pass over the chunk.
    """
    s = student_logits.float()
    zero = s.new_zeros(())
    grads = []
    kl_sum, ce_sum, mse_sum = zero, zero, zero
    if weights.alpha_ce > 0:
        t = teacher_logits.float()
        temperature = weights.temperature
        student_log_probs = F.log_softmax(s / temperature, dim=-1)
        teacher_log_probs = F.log_softmax(t / temperature, dim=-1)
        teacher_probs = teacher_log_probs.exp()
        kl_sum = (teacher_probs * (teacher_log_probs - student_log_probs)).sum()
        if with_grad:
            grads.append((kl_scale / temperature) * (student_log_probs.exp() - teacher_probs))
    if weights.alpha_mlm > 0:
        masked = labels != IGNORE_INDEX
        log_probs = F.log_softmax(s, dim=-1)
        target_log_probs = log_probs.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
        ce_sum = -(target_log_probs * masked).sum()
        if with_grad:
            weight = mlm_scale * masked.to(s.dtype).unsqueeze(1)
            grads.append((log_probs.exp() * weight).scatter_add(1, labels.clamp(min=0).unsqueeze(1), -weight))
    if weights.alpha_mse > 0:
        difference = s - teacher_logits.float()
        mse_sum = difference.square().sum()
        if with_grad:
            grads.append((2.0 * mse_scale) * difference)
    if not (with_grad and grads):
        return None, None, kl_sum, ce_sum, mse_sum
    grad = sum(grads[1:], grads[0])
    return grad.to(student_logits.dtype), grad.sum(0), kl_sum, ce_sum, mse_sum


ChunkTerms = Callable[..., tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]]


class FusedVocabLosses(torch.autograd.Function):
    """Autograd wrapper: forward computes the losses and the gradients chunk by chunk; backward scales them."""

    @staticmethod
    def forward(
        ctx,
        student_features: torch.Tensor,
        student_weight: torch.Tensor,
        student_bias: torch.Tensor,
        teacher_features: torch.Tensor | None,
        teacher_weight: torch.Tensor,
        teacher_bias: torch.Tensor,
        labels: torch.Tensor,
        masked_count: int,
        weights: VocabLossWeights,
        terms: ChunkTerms,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        device_type = student_features.device.type
        dtype = (
            torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else student_features.dtype
        )
        rows = student_features.shape[0]
        with_grad = any(ctx.needs_input_grad[:3])
        kl_scale = weights.alpha_ce * weights.temperature**2 / rows
        mlm_scale = weights.alpha_mlm / max(masked_count, 1)
        mse_scale = weights.alpha_mse / rows
        needs_teacher = weights.alpha_ce > 0 or weights.alpha_mse > 0
        with torch.autocast(device_type, enabled=False):
            weight, bias = student_weight.to(dtype), student_bias.to(dtype)
            if needs_teacher:
                t_weight, t_bias = teacher_weight.to(dtype), teacher_bias.to(dtype)
            grad_features = torch.empty_like(student_features) if with_grad else None
            grad_weight = torch.zeros_like(student_weight, dtype=torch.float32) if with_grad else None
            grad_bias = torch.zeros_like(student_bias, dtype=torch.float32) if with_grad else None
            sums = torch.zeros(3, device=student_features.device)
            for start in range(0, rows, weights.chunk_rows):
                stop = min(start + weights.chunk_rows, rows)
                features = student_features[start:stop].to(dtype)
                student_logits = F.linear(features, weight, bias)
                teacher_logits = (
                    F.linear(teacher_features[start:stop].to(dtype), t_weight, t_bias) if needs_teacher else None
                )
                grad_logits, chunk_grad_bias, kl_sum, ce_sum, mse_sum = terms(
                    student_logits,
                    teacher_logits,
                    labels[start:stop],
                    weights,
                    kl_scale,
                    mlm_scale,
                    mse_scale,
                    with_grad,
                )
                sums = sums + torch.stack([kl_sum, ce_sum, mse_sum])
                if with_grad:
                    grad_features[start:stop] = grad_logits @ weight
                    grad_weight += grad_logits.t() @ features
                    grad_bias += chunk_grad_bias
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        ce = sums[0] * weights.temperature**2 / rows
        mlm = sums[1] / max(masked_count, 1)
        mse = sums[2] / rows
        total = weights.alpha_ce * ce + weights.alpha_mlm * mlm + weights.alpha_mse * mse
        ctx.mark_non_differentiable(ce, mlm, mse)
        return total, ce, mlm, mse

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, *_unused: torch.Tensor):
        grad_features, grad_weight, grad_bias = ctx.saved_tensors
        grads = [None if g is None else g * grad_total.to(g.dtype) for g in (grad_features, grad_weight, grad_bias)]
        return (*grads, None, None, None, None, None, None, None)


def fused_vocab_losses(
    student_features: torch.Tensor,
    student_projection: tuple[torch.Tensor, torch.Tensor],
    teacher_features: torch.Tensor | None,
    teacher_projection: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    masked_count: int,
    weights: VocabLossWeights,
    terms: ChunkTerms = chunk_loss_terms,
) -> dict[str, torch.Tensor]:
    """The vocabulary-level loss terms without ever holding all logits.

    Args:
        student_features, teacher_features: (N, H) MLM-head features (the head before its vocabulary projection)
            at the N rows the KL / MSE terms cover; teacher None when alpha_ce = alpha_mse = 0.
        student_projection, teacher_projection: (weight (V, H), bias (V,)) of each vocabulary projection.
        labels: (N,) original ids at the masked rows among the N, -100 elsewhere.
        masked_count: number of masked rows among the N (a host int, so no device sync is needed).
        weights: temperature, alphas and chunk size.
        terms: the per-chunk function (`chunk_loss_terms`, or a compiled version of it).

    Returns "vocab_loss" (alpha-weighted sum, differentiable) and the unweighted terms "ce", "mlm", "mse" of the
    nonzero alphas (detached), each normalised as in `losses.py`.
    """
    total, ce, mlm, mse = FusedVocabLosses.apply(
        student_features,
        *student_projection,
        teacher_features,
        *teacher_projection,
        labels,
        masked_count,
        weights,
        terms,
    )
    terms_by_name = {"ce": (weights.alpha_ce, ce), "mlm": (weights.alpha_mlm, mlm), "mse": (weights.alpha_mse, mse)}
    return {"vocab_loss": total} | {name: value for name, (alpha, value) in terms_by_name.items() if alpha > 0}
