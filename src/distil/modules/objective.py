"""The distillation objective: one vocabulary of weighted terms for pretraining and task distillation, and how the
terms on vocabulary logits are averaged over the rows they cover.

`ObjectiveWeights` names the terms once, with the one check of the temperature and the weights: `alpha_kl` weighs the
soft targets (a divergence between teacher and student at temperature T, x T^2: the forward KL(teacher || student)
by default, or the reverse KL, or the generalized Jensen-Shannon divergence with its `beta`; `DIVERGENCES`),
`alpha_label` the loss on the labels (the masked-LM cross-entropy, or a causal LM's next-token cross-entropy, in
pretraining; the task's own loss on its gold labels), `alpha_cos` 1 - cos of the last hidden states, `alpha_mse` the
squared error between logits (pretraining); `alpha_hidden_mse`, `alpha_attention` and `alpha_relation` the terms on
the models' internals (TinyBERT's hidden-state MSE through projections, attention KL, MiniLM v2's relations:
`internal_terms.py`). Each term is logged as `train/loss_<name>` under
the names of `TERMS`. `objective_weights` builds them from a config section and maps the keys of the previous release
(`alpha_ce`, `alpha_mlm`; `alpha_hard`, `alpha_soft`, `alpha_hidden`) to these, with a warning naming the new key.

One function, `weighted_logits_loss`, turns the per-row losses of `losses.py` into the weighted total. The plain path
calls it once on the logits of all selected rows; the memory-saving path (`chunked_vocab_loss.py`) calls it on one
chunk of rows at a time and lets autograd differentiate it, so both paths compute the same objective from the same
code. Each term is averaged over the rows it covers in the whole batch (all selected rows, or only the masked ones),
which is why the function takes those counts rather than counting the rows it is given: chunks then add up exactly.

A new term is a function `(student_logits (N, V), teacher_logits (N, V) or None, labels (N,)) -> per-row loss (N,)`
wrapped in a `LogitsTerm` and passed to `DistillationModule(extra_terms=[...])`, or added to `logits_terms`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from distil.modules.losses import (
    IGNORE_INDEX,
    generalized_jsd_loss,
    logits_mse_loss,
    mlm_loss,
    reverse_kl_loss,
    soft_target_loss,
)
from distil.value_checks import is_number

TERMS = ("kl", "label", "cos", "mse", "hidden_mse", "attention", "relation")  # alpha_<name> weighs train/loss_<name>
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")  # the soft-target term's divergence (`divergence`)
OBJECTIVE_KEYS = (  # ObjectiveWeights' keys
    "temperature",
    "alpha_kl",
    "alpha_label",
    "alpha_cos",
    "alpha_mse",
    "alpha_hidden_mse",
    "alpha_attention",
    "alpha_relation",
    "divergence",
    "beta",
)
RENAMED_KEYS = {  # a key of the previous release -> its name now (accepted with a warning for one release)
    "alpha_ce": "alpha_kl",
    "alpha_mlm": "alpha_label",
    "alpha_soft": "alpha_kl",
    "alpha_hard": "alpha_label",
    "alpha_hidden": "alpha_cos",
}


@dataclass(frozen=True)
class ObjectiveWeights:
    """The temperature of the soft targets and the weight of each term (module docstring), checked on construction.

    Args:
        temperature: T > 0 of the softened distributions; the KL term is multiplied by T^2.
        alpha_kl, alpha_label, alpha_cos, alpha_mse: the terms' weights, finite and >= 0 (0 leaves a term out).
        alpha_hidden_mse, alpha_attention, alpha_relation: the weights of the terms on the models' internals
            (pretraining; `internal_terms.py`), likewise.
        divergence: the soft-target term's divergence, one of `DIVERGENCES` (still logged as `train/loss_kl`).
        beta: the interpolation of `divergence=jsd`, 0 < beta < 1 (`losses.generalized_jsd_loss`); unread otherwise.
        extra_weights: weights of further terms (pretraining's `extra_terms`), checked the same way.
        key: the config section whose keys the errors name (`distill`, `task_distillation`).
    """

    temperature: float
    alpha_kl: float = 0.0
    alpha_label: float = 0.0
    alpha_cos: float = 0.0
    alpha_mse: float = 0.0
    alpha_hidden_mse: float = 0.0
    alpha_attention: float = 0.0
    alpha_relation: float = 0.0
    divergence: str = "forward_kl"
    beta: float = 0.5
    extra_weights: tuple[float, ...] = ()
    key: str = field(default="distill", compare=False)

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"{self.key}.divergence={self.divergence!r} is not allowed: use one of {list(DIVERGENCES)}"
            )
        if self.divergence == "jsd" and not (is_number(self.beta) and 0 < self.beta < 1):
            raise ValueError(
                f"{self.key}.beta={self.beta!r} is not allowed with divergence=jsd: a number 0 < beta < 1 (near 0 "
                "like the forward KL, near 1 like the reverse KL: use divergence=forward_kl or reverse_kl for those)"
            )
        if not is_number(self.temperature) or not (0 < self.temperature < math.inf):
            raise ValueError(
                f"{self.key}.temperature={self.temperature!r} is not allowed: it must be a finite number > 0"
            )
        weights = {f"alpha_{name}": self.weight(name) for name in TERMS}
        weights |= {f"extra_terms[{i}].weight": weight for i, weight in enumerate(self.extra_weights)}
        for name, value in weights.items():
            if not is_number(value) or not (0 <= value < math.inf):
                raise ValueError(
                    f"{self.key}.{name}={value!r} is not allowed: loss weights must be finite numbers >= 0"
                )
        if not any(value > 0 for value in weights.values()):
            raise ValueError(f"{self.key} loss weights are all zero ({weights}): at least one must be > 0")

    def weight(self, term: str) -> float:
        """The weight of the term named `term` (one of `TERMS`)."""
        return getattr(self, f"alpha_{term}")


def check_cosine_widths(alpha_cos: float, teacher_width: int, student_width: int) -> None:
    """The cosine term compares last hidden states, so it needs a student as wide as the teacher."""
    if alpha_cos > 0 and teacher_width != student_width:
        raise ValueError(
            f"distill.alpha_cos={alpha_cos} needs the student's hidden size to be the teacher's: the student has "
            f"{student_width}, the teacher {teacher_width}; set distill.alpha_cos=0"
        )


def objective_weights(key: str = "distill", **values) -> ObjectiveWeights:
    """`ObjectiveWeights(**values)`, with the keys of the previous release (`RENAMED_KEYS`) taken under their new name
    and a warning; a renamed key that is None (its config default) is ignored."""
    for old, new in RENAMED_KEYS.items():
        value = values.pop(old, None)
        if value is not None:
            message = f"{key}.{old} is renamed {key}.{new} and goes in the next release: this run uses {new}={value}"
            warnings.warn(message, FutureWarning, stacklevel=2)  # once, also when the early check builds them first
            values[new] = value
    return ObjectiveWeights(**values, key=key)


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


def soft_target_divergence(weights: ObjectiveWeights) -> RowLoss:
    """The soft-target term's row loss: `weights.divergence` at `weights.temperature`, x T^2."""
    temperature, beta = weights.temperature, weights.beta
    return {
        "forward_kl": lambda student, teacher, labels: soft_target_loss(student, teacher, temperature),
        "reverse_kl": lambda student, teacher, labels: reverse_kl_loss(student, teacher, temperature=temperature),
        "jsd": lambda student, teacher, labels: generalized_jsd_loss(student, teacher, beta, temperature),
    }[weights.divergence]


def logits_terms(weights: ObjectiveWeights) -> list[LogitsTerm]:
    """The terms of `weights` on vocabulary logits, by their names: the soft-target divergence x T^2 (`kl`), the
    cross-entropy on the labels (`label`: masked or next tokens) and logits MSE (`mse`); the cosine term is on hidden
    states."""
    return [
        LogitsTerm("kl", weights.alpha_kl, soft_target_divergence(weights)),
        LogitsTerm(
            "label",
            weights.alpha_label,
            lambda student, teacher, labels: mlm_loss(student, labels),
            masked_only=True,
            needs_teacher=False,
        ),
        LogitsTerm("mse", weights.alpha_mse, lambda student, teacher, labels: logits_mse_loss(student, teacher)),
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
