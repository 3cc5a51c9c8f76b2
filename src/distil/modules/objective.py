"""The distillation objective on vocabulary logits: which loss terms, with what weight, averaged over which rows.

One function, `weighted_logits_loss`, turns the per-row losses of `losses.py` into the weighted total. The plain path
calls it once on the logits of all selected rows; the memory-saving path (`chunked_vocab_loss.py`) calls it on one
chunk of rows at a time and lets autograd differentiate it, so both paths compute the same objective from the same
code. Each term is averaged over the rows it covers in the whole batch (all selected rows, or only the masked ones),
which is why the function takes those counts rather than counting the rows it is given: chunks then add up exactly.

A new term is a function `(student_logits (N, V), teacher_logits (N, V) or None, labels (N,)) -> per-row loss (N,)`
wrapped in a `LogitsTerm` and passed to `DistillationModule(extra_terms=[...])`, or added to `distilbert_terms`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from distil.modules.losses import IGNORE_INDEX, logits_mse_loss, mlm_loss, soft_target_loss

RowLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LogitsTerm:
    """One weighted loss term on vocabulary logits.

    Args:
        name: logged as `train/loss_<name>`.
        weight: its weight in the total loss (> 0; terms of weight 0 are left out).
        loss: `(student_logits (N, V), teacher_logits (N, V) or None, labels (N,)) -> (N,)` loss of each row;
            labels hold the original token id at masked rows and -100 elsewhere.
        masked_only: averaged over the masked rows only (its loss at other rows is ignored), like the masked-LM
            term; else over every row given, which are all real tokens with `kl_positions=all`.
        needs_teacher: reads the teacher's logits (None is passed when no term needs them).
    """

    name: str
    weight: float
    loss: RowLoss
    masked_only: bool = False
    needs_teacher: bool = True


def distilbert_terms(temperature: float, alpha_ce: float, alpha_mlm: float, alpha_mse: float) -> list[LogitsTerm]:
    """The published run's logit-level terms: soft-target KL x T^2, masked-LM cross-entropy and logits MSE."""
    return [
        LogitsTerm("ce", alpha_ce, lambda student, teacher, labels: soft_target_loss(student, teacher, temperature)),
        LogitsTerm(
            "mlm",
            alpha_mlm,
            lambda student, teacher, labels: mlm_loss(student, labels),
            masked_only=True,
            needs_teacher=False,
        ),
        LogitsTerm("mse", alpha_mse, lambda student, teacher, labels: logits_mse_loss(student, teacher)),
    ]


def weighted_logits_loss(
    terms: Sequence[LogitsTerm],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    rows: int,
    masked_rows: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted sum of the terms' contributions from these rows, and each term's unweighted contribution.

    Args:
        terms: the terms (weights > 0).
        student_logits, teacher_logits: (n, V) logits of some of the selected rows (all of them, or one chunk).
        labels: (n,) original ids at the masked rows among them, -100 elsewhere.
        rows, masked_rows: how many rows, and masked rows, all the selected rows hold: each term's row losses are
            summed here and divided by the count of rows it covers, so contributions of chunks add up to the mean.

    Returns (total, contributions): a scalar, and a (len(terms),) tensor in the order of `terms`.
    """
    masked = labels != IGNORE_INDEX
    contributions = []
    for term in terms:
        per_row = term.loss(student_logits, teacher_logits, labels)
        if term.masked_only:
            per_row = torch.where(masked, per_row, 0.0)
        contributions.append(per_row.sum() / max(masked_rows if term.masked_only else rows, 1))
    total = sum(term.weight * contribution for term, contribution in zip(terms, contributions))
    return total, torch.stack(contributions)
