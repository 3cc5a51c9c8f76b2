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
import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distil.families import teacher_family
from distil.modules.distillation import DistillationModule
from distil.modules.losses import topk_kl_loss
from distil.modules.objective import weighted_logits_loss
from distil.modules.row_index import IndexedBatch, RowIndex, select_rows
from distil.topk_cache.objective import check_cached_objective
from distil.topk_cache.store import read_cache_metadata
from distil.topk_cache.stream import TEACHER_HIDDEN, TEACHER_TARGETS

log = logging.getLogger(__name__)


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
        speed = kwargs.get("speed")
        chunk = getattr(speed, "vocab_chunk_rows", None)
        defaults = {key: p.default for key, p in inspect.signature(DistillationModule).parameters.items()}
        check_cached_objective(defaults | kwargs, has_hidden, teacher_cache, chunk, kwargs.get("extra_terms", ()))
        super().__init__(teacher, student, **kwargs)
        del self.teacher  # never moved, run or saved
        self.teacher = None
        self.teacher_parts = self.teacher_encoder = None
        temperature = self.hparams.temperature

        def cached_kl(student_logits, targets, labels):
            return topk_kl_loss(student_logits, *targets, temperature)

        self.cached_terms = [  # the live terms (weights, renamed keys included), the KL read from the cache
            dataclasses.replace(term, loss=cached_kl) if term.name == "kl" else term for term in self.logits_terms
        ]

    def train(self, mode: bool = True) -> CachedTeacherDistillation:
        return nn.Module.train(self, mode)

    def distillation_losses(self, inputs: dict[str, torch.Tensor], rows: RowIndex | None = None) -> dict:
        """Each loss term (unweighted) and their weighted sum under "loss", from the student's outputs and the
        teacher's cached ones in `inputs`."""
        rows = rows if rows is not None else RowIndex.of(inputs)
        attention_mask = None if rows.padding_free else inputs["attention_mask"]
        student_hidden = self.student_encoder(inputs["input_ids"], attention_mask).flatten(0, 1)
        losses, total = self.cached_logits_losses(inputs, rows, student_hidden) if self.cached_terms else ({}, 0.0)
        if self.alpha_cos > 0:
            teacher_hidden = inputs[TEACHER_HIDDEN].flatten(0, 1)
            real_student, real_teacher = select_rows(student_hidden, rows.real), select_rows(teacher_hidden, rows.real)
            losses["cos"] = self.cosine_loss(real_student, real_teacher)
            total = total + self.alpha_cos * losses["cos"]
        losses["loss"] = total
        return losses

    def cached_logits_losses(self, inputs, rows: RowIndex, student_hidden: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """The terms on the student's logits (the KL against the cached top-k outputs) and their weighted sum."""
        vocab_rows = rows.real if self.logits_on_all_rows else rows.masked
        labels = select_rows(inputs["labels"].flatten(), vocab_rows)
        features = self.student_parts.head_features(select_rows(student_hidden, vocab_rows))
        student_logits = F.linear(features, *self.student_parts.output_projection())
        targets = tuple(inputs[key] for key in TEACHER_TARGETS)
        if any(term.name == "kl" for term in self.cached_terms) and len(targets[0]) != len(labels):
            raise ValueError(
                f"the batch holds the teacher's outputs at {len(targets[0])} positions and the soft-target term "
                f"reads {len(labels)}: the cache was written for other kl_positions than distill.kl_positions="
                f"{self.hparams.kl_positions!r}"
            )
        total, contributions = weighted_logits_loss(
            self.cached_terms, student_logits, targets, labels, labels.shape[0], rows.masked.numel()
        )
        return {term.name: value for term, value in zip(self.cached_terms, contributions)}, total

    def validation_step(self, batch: IndexedBatch, batch_idx: int) -> None:
        inputs, rows = batch
        attention_mask = None if rows.padding_free else inputs["attention_mask"]
        student_hidden = self.student_encoder(inputs["input_ids"], attention_mask).flatten(0, 1)
        labels = select_rows(inputs["labels"].flatten(), rows.masked)
        self.val_student.update(self.student_parts.vocab_head(select_rows(student_hidden, rows.masked)), labels)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/student_{k}": v for k, v in self.val_student.compute().items()}, sync_dist=False)
        self.val_student.reset()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored_schedule_steps = checkpoint.get("schedule_steps")
