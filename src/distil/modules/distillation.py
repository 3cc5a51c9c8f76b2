"""DistillationModule: a frozen teacher, a trainable student, and the DistilBERT training objective.

One training step:
    teacher encoder (no_grad) and student encoder over the batch
    -> vocabulary heads of both, only at the positions a loss covers (the row index, found on the host)
    -> the objective (`objective.py`): soft-target divergence (x T^2, `kl`), cross-entropy on the labels (`label`),
       optional logits MSE (`mse`) and any extra term, the hidden-state cosine (`cos`), the internal terms
       (`internal_terms.py`: `hidden_mse`, `attention`, `relation`)
    -> weighted sum (the alphas of `ObjectiveWeights`), each term logged on its own as `train/loss_<name>`.

Masked and causal LMs take the same step: a batch's `labels` hold the target of each position that has one (the
original token at a masked position; the next token, shifted by the collator, for a causal LM) and -100 elsewhere.
The model family (`distil.families`) splits both models into encoder, head features and output projection; nothing
here depends on which family they are, and validation names its metrics by the family's kind (`mlm_*` or
`next_token_*`). How the step is made fast lives beside it, in `distil.perf`, and is reached
through one object, `speed` (`StepSpeed`): teacher precision, the chunked vocabulary loss and compilation. What the
step reads of the teacher comes from two methods, `teacher_outputs` and `teacher_logits_targets`: a run from a cache
of the teacher's outputs (`cached_teacher.py`) overrides those two and has no teacher to score in validation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from distil.families import model_parts, teacher_family
from distil.modules.internal_terms import internal_terms_of
from distil.modules.losses import cosine_hidden_loss
from distil.modules.lr_schedule import continue_on_new_schedule
from distil.modules.metrics import TokenPredictionMetrics, Top1Agreement, prediction_of
from distil.modules.objective import (
    LogitsTerm,
    ObjectiveWeights,
    check_cosine_widths,
    logits_terms,
    objective_weights,
    weighted_logits_loss,
)
from distil.modules.row_index import IndexedBatch, RowIndex, select_rows
from distil.modules.teacher_targets import TeacherLogits, TeacherTargets
from distil.perf.step_speed import StepSpeed
from distil.value_checks import is_number


class DistillationModule(pl.LightningModule):
    """Trains `student` to imitate `teacher` with the DistilBERT loss.

    Args:
        teacher: language model of a supported family (masked or causal); frozen, kept in eval mode, run under
            no_grad, left out of checkpoints.
        student: student of the teacher's kind (from `build_student`); the only trainable parameters.
        optimizer: `params -> Optimizer` (a Hydra partial of e.g. torch.optim.AdamW).
        scheduler: `(optimizer=, num_warmup_steps=, num_training_steps=) -> LRScheduler`, stepped every optimizer step
            (a partial of `transformers.get_scheduler`); None for a constant LR.
        warmup_fraction: fraction of all optimizer steps the schedule warms up for.
        temperature: softmax temperature T of the soft targets (> 0).
        alpha_kl: weight of the soft-target term (its divergence: `divergence`).
        alpha_label: weight of the cross-entropy on the labels (masked tokens, or next tokens for a causal LM).
        alpha_cos: weight of the cosine loss between last hidden states (the student's width must be the teacher's).
        alpha_mse: weight of the MSE between logits.
        alpha_hidden_mse, alpha_attention, alpha_relation, layer_targets, relation_teacher_layer, relation_heads:
            the terms on the models' internals and the layers they compare (`internal_terms.py`).
        divergence: "forward_kl" (KL(teacher || student), DistilBERT's), "reverse_kl" or "jsd" (with `beta`).
        beta: the generalized JSD's interpolation, 0 < beta < 1 (TRL's convention: `losses.generalized_jsd_loss`).
        kl_positions: "all" non-padding positions (the published run) or only the "masked" ones, the positions with
            a label (cheaper for a masked LM; for a causal LM the scored next tokens, e.g. response tokens only): the
            rows of every term that is not masked-only (the divergence, the MSE and extra terms).
        extra_terms: further loss terms on the vocabulary logits (`objective.LogitsTerm`), added to the total and
            logged as `train/loss_<name>`; both the plain and the chunked path compute them.
        speed: how the step runs fast without changing what it computes (`distil.perf.step_speed.StepSpeed`).
        alpha_ce, alpha_mlm: the names of alpha_kl and alpha_label before (taken with a warning; one release).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        warmup_fraction: float = 0.05,
        temperature: float = 2.0,
        alpha_kl: float = 5.0,
        alpha_label: float = 2.0,
        alpha_cos: float = 1.0,
        alpha_mse: float = 0.0,
        alpha_hidden_mse: float = 0.0,
        alpha_attention: float = 0.0,
        alpha_relation: float = 0.0,
        layer_targets: Sequence[int] | None = None,
        relation_teacher_layer: int | None = None,
        relation_heads: int | None = None,
        divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl",
        beta: float = 0.5,
        kl_positions: Literal["all", "masked"] = "all",
        extra_terms: Sequence[LogitsTerm] = (),
        speed: StepSpeed = StepSpeed(),
        alpha_ce: float | None = None,
        alpha_mlm: float | None = None,
    ) -> None:
        super().__init__()
        check_module_settings(kl_positions, warmup_fraction)
        weights = objective_weights(
            "distill",
            temperature=temperature,
            alpha_kl=alpha_kl,
            alpha_label=alpha_label,
            alpha_cos=alpha_cos,
            alpha_mse=alpha_mse,
            alpha_hidden_mse=alpha_hidden_mse,
            alpha_attention=alpha_attention,
            alpha_relation=alpha_relation,
            divergence=divergence,
            beta=beta,
            extra_weights=tuple(term.weight for term in extra_terms),
            alpha_ce=alpha_ce,
            alpha_mlm=alpha_mlm,
        )
        self.save_hyperparameters(ignore=["teacher", "student", "optimizer", "scheduler", "extra_terms", "speed"])
        self.speed = speed
        self.teacher = speed.cast_teacher(teacher).eval().requires_grad_(False)
        self.student = student
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_fraction = warmup_fraction
        self.alpha_cos = weights.alpha_cos
        self.logits_terms = [term for term in self.vocabulary_terms(weights, extra_terms) if term.weight]
        self.needs_teacher_logits = any(term.needs_teacher for term in self.logits_terms)
        self.logits_on_all_rows = kl_positions == "all" and any(not term.masked_only for term in self.logits_terms)
        check_cosine_widths(weights.alpha_cos, teacher.config.hidden_size, student.config.hidden_size)
        self.teacher_parts = model_parts(teacher, "teacher")
        self.student_parts = model_parts(student, "student")
        pairs = (student, self.student_parts), (teacher, self.teacher_parts)
        self.internal_terms = internal_terms_of(weights, *pairs, layer_targets, relation_teacher_layer, relation_heads)
        self.teacher_encoder = speed.compiled(self.teacher_parts.encode)
        self.student_encoder = speed.compiled(self.student_parts.encode)
        self.cosine_loss = speed.compiled(mean_cosine_loss)
        self.logits_objective = speed.compiled(
            functools.partial(weighted_logits_loss, self.logits_terms), dynamic=False
        )
        self.chunked_logits_loss = speed.chunked(self.logits_objective)  # None: all logits at once
        self.schedule_steps: int | None = None  # optimizer steps the LR schedule spans (set with the optimizer)
        self.restored_schedule_steps: int | None = None  # the same, of the checkpoint resumed from
        prediction = prediction_of(teacher_family(teacher.config).causal).name  # the metrics' names
        self.val_student = TokenPredictionMetrics(prediction)
        self.val_teacher = TokenPredictionMetrics(prediction)
        self.val_agreement = Top1Agreement()

    def vocabulary_terms(self, weights: ObjectiveWeights, extra_terms: Sequence[LogitsTerm]) -> list[LogitsTerm]:
        """The terms on the vocabulary logits the weights and `extra_terms` ask for (a cached run reads its KL's)."""
        return [*logits_terms(weights), *extra_terms]

    def train(self, mode: bool = True) -> DistillationModule:
        """Lightning calls train() on the whole module each epoch; the teacher must stay in eval mode (no dropout)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Finds the row index on the host copy of a training or validation batch (no device sync), then moves
        both."""
        if isinstance(batch, dict) and "labels" in batch:
            batch = IndexedBatch(batch, RowIndex.of(batch))
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def distillation_losses(
        self, inputs: dict[str, torch.Tensor], rows: RowIndex | None = None
    ) -> dict[str, torch.Tensor]:
        """Each loss term (unweighted) and their weighted sum under "loss", for one batch (`rows`: its row index, found
        from the batch when not given)."""
        labels = inputs["labels"]
        rows = rows if rows is not None else RowIndex.of(inputs)
        attention_mask = None if rows.padding_free else inputs["attention_mask"]  # no padding: no mask (flash SDPA)
        teacher_hidden, teacher_states = self.teacher_outputs(inputs, attention_mask)
        student_hidden, student_states = self.encode(self.student_encoder, self.student_parts, inputs, attention_mask)
        student_hidden = student_hidden.flatten(0, 1)

        losses: dict[str, torch.Tensor] = {}
        loss = 0.0
        if self.internal_terms is not None:
            losses = self.internal_terms(student_states, teacher_states, rows.real)
            loss = sum(self.internal_terms.weights[name] * value for name, value in losses.items())
        if self.logits_terms:
            vocab_rows = rows.real if self.logits_on_all_rows else rows.masked  # None: every position
            total, contributions = self.logits_loss(
                select_rows(student_hidden, vocab_rows),
                self.teacher_logits_targets(inputs, teacher_hidden, vocab_rows),
                select_rows(labels.flatten(), vocab_rows),
                rows.masked.numel(),
            )
            losses |= {term.name: value for term, value in zip(self.logits_terms, contributions)}
            loss = loss + total
        if self.alpha_cos > 0:
            real_student, real_teacher = select_rows(student_hidden, rows.real), select_rows(teacher_hidden, rows.real)
            losses["cos"] = self.cosine_loss(real_student, real_teacher)
            loss = loss + self.alpha_cos * losses["cos"]
        losses["loss"] = loss
        return losses

    @torch.no_grad()
    def teacher_outputs(self, inputs, attention_mask) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
        """The teacher's side of the step: its last hidden states (B x L, H) and every layer's when the internal terms
        read them (the one place the step runs the teacher; a cached run reads them from the batch)."""
        hidden, states = self.encode(self.teacher_encoder, self.teacher_parts, inputs, attention_mask)
        return hidden.flatten(0, 1), states

    @torch.no_grad()
    def teacher_logits_targets(self, inputs, teacher_hidden: torch.Tensor, vocab_rows) -> TeacherLogits | None:
        """What the logits terms read of the teacher at `vocab_rows`: its logits, made from its head features a range
        of rows at a time (all at once, or chunk by chunk); None when no term reads them."""
        if not self.needs_teacher_logits:
            return None
        features = self.teacher_parts.head_features(select_rows(teacher_hidden, vocab_rows))
        return TeacherLogits(features, *self.teacher_parts.output_projection())

    def encode(self, encoder, parts, inputs, attention_mask) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Last hidden states (B, L, H), and every layer's when the internal terms read them."""
        if self.internal_terms is not None and self.internal_terms.needs_hidden_states:
            return parts.encode_layers(inputs["input_ids"], attention_mask)
        return encoder(inputs["input_ids"], attention_mask), None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's parameters and the internal terms' projections: what the optimizer updates and clips."""
        extra = list(self.internal_terms.parameters()) if self.internal_terms is not None else []
        return [*self.student.parameters(), *extra]

    def logits_loss(
        self, student_hidden: torch.Tensor, teacher: TeacherTargets | None, labels: torch.Tensor, masked_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective on the vocabulary logits of the selected rows (with `speed.vocab_chunk_rows`: chunk by chunk,
        never holding all the logits); `teacher` from `teacher_logits_targets`."""
        student_features = self.student_parts.head_features(student_hidden)
        projection = self.student_parts.output_projection()
        if self.chunked_logits_loss is not None:
            return self.chunked_logits_loss(student_features, projection, teacher, labels, masked_rows)
        student_logits = F.linear(student_features, *projection)
        teacher_logits = teacher.rows(0, len(labels)) if teacher is not None else None
        return self.logits_objective(student_logits, teacher_logits, labels, labels.shape[0], masked_rows)

    def training_step(self, batch: IndexedBatch, batch_idx: int) -> torch.Tensor:
        losses = self.distillation_losses(batch.inputs, batch.rows)
        loss = losses.pop("loss")
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/loss_{name}": value for name, value in losses.items()})
        return loss

    def validation_step(self, batch: IndexedBatch, batch_idx: int) -> None:
        """The student's metrics, and the teacher's and their agreement when the run has one (not a cached run)."""
        inputs, rows = batch
        attention_mask = None if rows.padding_free else inputs["attention_mask"]
        student_hidden = self.student_encoder(inputs["input_ids"], attention_mask).flatten(0, 1)
        labels = select_rows(inputs["labels"].flatten(), rows.masked)
        student_logits = self.student_parts.vocab_head(select_rows(student_hidden, rows.masked))
        self.val_student.update(student_logits, labels)
        if self.teacher is not None:
            teacher_hidden = self.teacher_encoder(inputs["input_ids"], attention_mask).flatten(0, 1)
            teacher_logits = self.teacher_parts.vocab_head(select_rows(teacher_hidden, rows.masked))
            self.val_teacher.update(teacher_logits, labels)
            self.val_agreement.update(student_logits, teacher_logits)

    def on_validation_epoch_end(self) -> None:
        metrics = {f"val/student_{k}": v for k, v in self.val_student.compute().items()}
        if self.teacher is not None:
            metrics |= {f"val/teacher_{k}": v for k, v in self.val_teacher.compute().items()}
            metrics["val/top1_agreement"] = self.val_agreement.compute()
        self.log_dict(metrics, sync_dist=False)  # torchmetrics already reduced them across ranks
        for metric in (self.val_student, self.val_teacher, self.val_agreement):
            metric.reset()

    def configure_gradient_clipping(
        self, optimizer: Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip by global norm; also for fused optimizers under bf16, which Lightning's mixed-precision plugin refuses.

        Lightning forbids clipping with optimizers that can unscale fp16 gradients themselves (fused AdamW) because
        its plugin would not unscale them first; bf16 has no gradient scaler, so clipping before the step is exact.
        """
        no_scaler = getattr(self.trainer.precision_plugin, "scaler", None) is None
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        if gradient_clip_val and fused and no_scaler and gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        self.schedule_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(
            optimizer=optimizer,
            num_warmup_steps=int(self.warmup_fraction * self.schedule_steps),
            num_training_steps=self.schedule_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the teacher out of checkpoints (it is reloaded from its source); store the student's config and the
        length of the LR schedule."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        checkpoint["student_config"] = self.student.config.to_dict()
        if self.schedule_steps is not None:
            checkpoint["schedule_steps"] = self.schedule_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the already-loaded teacher's weights back so strict loading of the state dict holds."""
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        self.restored_schedule_steps = checkpoint.get("schedule_steps")

    def on_train_start(self) -> None:
        """A resume with another schedule length continues on the new schedule (`lr_schedule.py`)."""
        continue_on_new_schedule(self.trainer, self.restored_schedule_steps, self.schedule_steps)


def mean_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """The hidden-state cosine term: `cosine_hidden_loss` averaged over the real tokens."""
    return cosine_hidden_loss(student_hidden, teacher_hidden).mean()


def check_module_settings(kl_positions: str, warmup_fraction: float) -> None:
    """Raise ValueError naming the `distill.*` key, its value and what is allowed (the weights and the temperature
    are `ObjectiveWeights`' to check)."""
    if kl_positions not in ("all", "masked"):
        raise ValueError(f"distill.kl_positions={kl_positions!r} is not allowed: use 'all' or 'masked'")
    if not is_number(warmup_fraction) or not 0 <= warmup_fraction < 1:
        raise ValueError(f"distill.warmup_fraction={warmup_fraction!r} is not allowed: a number in [0, 1)")
