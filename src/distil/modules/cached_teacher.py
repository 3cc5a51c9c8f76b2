"""Distillation from a teacher cache (`distill.teacher_cache`): the student's step without the teacher's forward.

The data module's batches carry the teacher's cached top-k outputs at the positions the soft-target term reads
(`distil.topk_cache.stream`); the soft-target term is `losses.topk_kl_loss`, the KL on the teacher's top-k ids plus
one bucket for the rest of the vocabulary (exact when k = V, a lower bound of the full KL otherwise); the label term
is unchanged; the cosine term reads cached hidden states when the cache holds them (and is refused otherwise). Terms
that need the teacher's full logits or internals (logits MSE, the reverse KL and JSD, the internal terms, extra terms
on the teacher's logits) are refused, naming the key.

The teacher given to the module only builds the student: it is dropped on construction, so it is never moved to the
device, run or saved. Validation reports the student's metrics only (`val/student_*`): there is no teacher to score.

`distillation_module` is the `_target_` of conf/distill: the live-teacher `DistillationModule` when `teacher_cache`
is null, else `CachedTeacherDistillation`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import torch
from torch import nn

from distil.families import teacher_family
from distil.modules.distillation import DistillationModule
from distil.modules.losses import topk_kl_loss
from distil.modules.objective import LogitsTerm, ObjectiveWeights
from distil.modules.teacher_targets import CachedTeacherTargets
from distil.topk_cache.objective import check_cached_objective
from distil.topk_cache.store import read_cache_metadata
from distil.topk_cache.stream import TEACHER_HIDDEN, TEACHER_TARGETS


def skeleton_teacher(config) -> nn.Module:
    """The teacher's architecture on the meta device, no weight read or allocated: what the module needs of a teacher
    when the student is a given pretrained one."""
    with torch.device("meta"):
        return teacher_family(config).auto_class.from_config(config)


def distillation_module(teacher: nn.Module, student: nn.Module, teacher_cache: str | None = None, **kwargs):
    """`DistillationModule(teacher, student, **kwargs)`, or with `teacher_cache` (a folder written by
    `python -m distil.cache_teacher`) `CachedTeacherDistillation`."""
    if teacher_cache is None:
        return DistillationModule(teacher, student, **kwargs)
    return CachedTeacherDistillation(teacher, student, teacher_cache=teacher_cache, **kwargs)


class CachedTeacherDistillation(DistillationModule):
    """`DistillationModule` whose teacher outputs come with the batches (module docstring).

    Args:
        teacher: the teacher (or `skeleton_teacher`); read for its config only, then dropped.
        student, and the other arguments: as `DistillationModule`'s.
        teacher_cache: the cache folder, whose metadata says whether it holds hidden states (the batches read it).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, teacher_cache: str, **kwargs) -> None:
        has_hidden = read_cache_metadata(teacher_cache)["shape"]["hidden_size"] > 0
        defaults = {key: p.default for key, p in inspect.signature(DistillationModule).parameters.items()}
        check_cached_objective(defaults | kwargs, has_hidden, teacher_cache, kwargs.get("extra_terms", ()))
        super().__init__(teacher, student, **kwargs)
        self.teacher = None  # never moved, run or saved
        self.teacher_parts = self.teacher_encoder = None

    def vocabulary_terms(self, weights: ObjectiveWeights, extra_terms) -> list[LogitsTerm]:
        """The live terms (weights and renamed keys included), the KL read from the cache."""
        cached_kl = functools.partial(cached_kl_loss, temperature=weights.temperature)
        terms = super().vocabulary_terms(weights, extra_terms)
        return [dataclasses.replace(term, loss=cached_kl) if term.name == "kl" else term for term in terms]

    def teacher_outputs(self, inputs, attention_mask) -> tuple[torch.Tensor | None, None]:
        """The teacher's cached last hidden states (B x L, H) when the cache holds them."""
        hidden = inputs.get(TEACHER_HIDDEN)
        return (hidden.flatten(0, 1) if hidden is not None else None), None

    def teacher_logits_targets(self, inputs, teacher_hidden, vocab_rows) -> CachedTeacherTargets | None:
        """The teacher's cached top-k ids, log-probabilities and tail at the rows the soft-target term reads."""
        if not self.needs_teacher_logits:
            return None
        targets = tuple(inputs[key] for key in TEACHER_TARGETS)
        rows = len(inputs["labels"].flatten()) if vocab_rows is None else len(vocab_rows)
        if len(targets[0]) != rows:
            raise ValueError(
                f"the batch holds the teacher's outputs at {len(targets[0])} positions and the soft-target term "
                f"reads {rows}: the cache was written for other kl_positions than distill.kl_positions="
                f"{self.hparams.kl_positions!r}"
            )
        return CachedTeacherTargets(*targets)


def cached_kl_loss(student_logits: torch.Tensor, targets: tuple[torch.Tensor, ...], labels, temperature: float):
    """The soft-target term's loss per row from the cached top-k outputs (`losses.topk_kl_loss`)."""
    return topk_kl_loss(student_logits, *targets, temperature)
