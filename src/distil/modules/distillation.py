"""DistillationModule: a frozen teacher, a trainable student, and the DistilBERT training objective.

One training step:
    teacher encoder (no_grad) and student encoder over the batch
    -> vocabulary heads of both, only at the positions a loss covers (all at once, or chunk by chunk)
    -> the objective (`objective.py`): soft-target KL (x T^2), masked-LM cross-entropy, optional logits MSE and any
       extra term, plus the hidden-state cosine
    -> weighted sum (alphas), each term logged on its own.

The model family (`distil.families`) splits both models into encoder, head features and output projection; nothing
here depends on which family they are.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from distil.families import masked_lm_parts
from distil.modules.chunked_vocab_loss import chunked_logits_loss
from distil.modules.losses import IGNORE_INDEX, cosine_hidden_loss
from distil.modules.low_precision_layer_norm import use_low_precision_layer_norm
from distil.modules.metrics import MaskedLMMetrics, Top1Agreement
from distil.modules.objective import LogitsTerm, distilbert_terms, weighted_logits_loss
from distil.modules.row_index import row_index_of, select_rows, with_row_index

log = logging.getLogger(__name__)

TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's modes


class DistillationModule(pl.LightningModule):
    """Trains `student` to imitate `teacher` with the DistilBERT loss.

    Args:
        teacher: masked-LM teacher of a supported family; frozen, kept in eval mode, run under no_grad, left out of
            checkpoints.
        student: masked-LM student (from `build_student`); the only trainable parameters.
        optimizer: `params -> Optimizer` (a Hydra partial of e.g. torch.optim.AdamW).
        scheduler: `(optimizer, total_steps) -> LRScheduler`, stepped every optimizer step; None for a constant LR.
        temperature: softmax temperature T of the soft targets (> 0).
        alpha_ce: weight of the soft-target KL term.
        alpha_mlm: weight of the supervised masked-LM cross-entropy.
        alpha_cos: weight of the cosine loss between last hidden states.
        alpha_mse: weight of the MSE between logits.
        kl_positions: "all" non-padding positions (the published run) or only the "masked" ones (cheaper): the rows of
            every term that is not masked-only (the KL, the MSE and extra terms).
        extra_terms: further loss terms on the vocabulary logits (`objective.LogitsTerm`), added to the total and
            logged as `train/loss_<name>`; both the plain and the chunked path compute them.
        teacher_dtype: dtype the teacher's weights are kept in: "float32", "bfloat16" or "float16".
        row_index_on_host: find the masked and real positions on the host copy of each batch before it moves to the
            device (no device sync, static shapes; see `row_index.py`); False selects them with masks on the device.
        skip_full_attention_mask: pass no attention mask to the encoders for batches without padding, so SDPA can
            use its flash kernel (padding is known from the row index's length, without a device sync).
        vocab_chunk_rows: rows per chunk of the vocabulary projection + objective (`chunked_vocab_loss.py`); full
            logits are never held; None computes the logits of all selected rows at once, then the objective.
        low_precision_layer_norm: under autocast, LayerNorms of both models compute in the autocast dtype (bf16)
            instead of fp32, so the residual stream stays bf16 (`low_precision_layer_norm.py`).
        compile: `torch.compile` the teacher and student encoders, the cosine loss and the logits objective.
        compile_mode: `torch.compile` mode of all of them: "default", "max-autotune-no-cudagraphs" (autotuned matrix
            products, whose Triton templates can take the bias and activation in; minutes of compilation),
            "max-autotune" or "reduce-overhead" (those two add CUDA graphs).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: Callable[[Optimizer, int], LRScheduler] | None = None,
        temperature: float = 2.0,
        alpha_ce: float = 5.0,
        alpha_mlm: float = 2.0,
        alpha_cos: float = 1.0,
        alpha_mse: float = 0.0,
        kl_positions: Literal["all", "masked"] = "all",
        extra_terms: Sequence[LogitsTerm] = (),
        teacher_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        row_index_on_host: bool = True,
        skip_full_attention_mask: bool = True,
        vocab_chunk_rows: int | None = None,
        low_precision_layer_norm: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        check_objective(
            temperature,
            alpha_ce,
            alpha_mlm,
            alpha_cos,
            alpha_mse,
            kl_positions,
            teacher_dtype,
            [term.weight for term in extra_terms],
        )
        check_step_options(vocab_chunk_rows, compile_mode)
        self.save_hyperparameters(ignore=["teacher", "student", "optimizer", "scheduler", "extra_terms"])
        self.teacher = teacher.to(TEACHER_DTYPES[teacher_dtype]).eval().requires_grad_(False)
        self.student = student
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.alpha_cos = alpha_cos
        self.logits_terms = [
            term
            for term in [*distilbert_terms(temperature, alpha_ce, alpha_mlm, alpha_mse), *extra_terms]
            if term.weight
        ]
        self.needs_teacher_logits = any(term.needs_teacher for term in self.logits_terms)
        self.logits_on_all_rows = kl_positions == "all" and any(not term.masked_only for term in self.logits_terms)
        self.teacher_parts = masked_lm_parts(teacher, "teacher")
        self.student_parts = masked_lm_parts(student, "student")
        self.teacher_encoder, self.student_encoder = self.teacher_parts.encode, self.student_parts.encode
        self.row_index_on_host = row_index_on_host
        self.skip_full_attention_mask = skip_full_attention_mask
        self.vocab_chunk_rows = vocab_chunk_rows
        self.logits_objective = functools.partial(weighted_logits_loss, self.logits_terms)
        self.cosine_loss = mean_cosine_loss
        if low_precision_layer_norm:
            use_low_precision_layer_norm(self.teacher)
            use_low_precision_layer_norm(self.student)
        if compile:
            self.teacher_encoder = torch.compile(self.teacher_encoder, mode=compile_mode)
            self.student_encoder = torch.compile(self.student_encoder, mode=compile_mode)
            self.cosine_loss = torch.compile(mean_cosine_loss, mode=compile_mode)
            self.logits_objective = torch.compile(self.logits_objective, mode=compile_mode, dynamic=False)
        self.schedule_steps: int | None = None  # optimizer steps the LR schedule spans (set with the optimizer)
        self.restored_schedule_steps: int | None = None  # the same, of the checkpoint resumed from
        self.val_student = MaskedLMMetrics()
        self.val_teacher = MaskedLMMetrics()
        self.val_agreement = Top1Agreement()

    def train(self, mode: bool = True) -> DistillationModule:
        """Lightning calls train() on the whole module each epoch; the teacher must stay in eval mode (no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Adds the row index on the host copy of the batch (no device sync), then moves the batch."""
        if self.row_index_on_host and isinstance(batch, dict) and "labels" in batch:
            batch = with_row_index(batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def distillation_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss term (unweighted) and their weighted sum under "loss", for one batch."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        rows = row_index_of(batch)
        attention_mask = None if self.skip_full_attention_mask and rows.padding_free else batch["attention_mask"]
        with torch.no_grad():
            teacher_hidden = self.teacher_encoder(input_ids, attention_mask).flatten(0, 1)
        student_hidden = self.student_encoder(input_ids, attention_mask).flatten(0, 1)

        losses: dict[str, torch.Tensor] = {}
        loss = 0.0
        if self.logits_terms:
            vocab_rows = rows.real if self.logits_on_all_rows else rows.masked  # None: every position
            total, contributions = self.logits_loss(
                select_rows(student_hidden, vocab_rows),
                select_rows(teacher_hidden, vocab_rows),
                select_rows(labels.flatten(), vocab_rows),
                rows.masked.numel(),
            )
            losses = {term.name: value for term, value in zip(self.logits_terms, contributions)}
            loss = total
        real_student, real_teacher = select_rows(student_hidden, rows.real), select_rows(teacher_hidden, rows.real)
        losses["cos"] = self.cosine_loss(real_student, real_teacher)
        losses["loss"] = loss + self.alpha_cos * losses["cos"] if self.alpha_cos > 0 else loss
        return losses

    def logits_loss(
        self, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, labels: torch.Tensor, masked_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective on the vocabulary logits of the selected rows: all logits at once, or chunk by chunk."""
        teacher_features = None
        if self.needs_teacher_logits:
            with torch.no_grad():
                teacher_features = self.teacher_parts.head_features(teacher_hidden)
        student_features = self.student_parts.head_features(student_hidden)
        rows = labels.shape[0]
        if self.vocab_chunk_rows is not None:
            return chunked_logits_loss(
                student_features,
                self.student_parts.output_projection(),
                teacher_features,
                self.teacher_parts.output_projection(),
                labels,
                masked_rows,
                int(self.vocab_chunk_rows),
                self.logits_objective,
            )
        teacher_logits = None
        if teacher_features is not None:
            with torch.no_grad():
                teacher_logits = F.linear(teacher_features, *self.teacher_parts.output_projection())
        student_logits = F.linear(student_features, *self.student_parts.output_projection())
        return self.logits_objective(student_logits, teacher_logits, labels, rows, masked_rows)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.distillation_losses(batch)
        self.log_dict({f"train/{'loss' if k == 'loss' else 'loss_' + k}": v for k, v in losses.items()})
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        masked = batch["labels"] != IGNORE_INDEX
        labels = batch["labels"][masked]
        teacher_hidden = self.teacher_encoder(batch["input_ids"], batch["attention_mask"])
        student_hidden = self.student_encoder(batch["input_ids"], batch["attention_mask"])
        teacher_logits = self.teacher_parts.vocab_head(teacher_hidden[masked])
        student_logits = self.student_parts.vocab_head(student_hidden[masked])
        self.val_student.update(student_logits, labels)
        self.val_teacher.update(teacher_logits, labels)
        self.val_agreement.update(student_logits, teacher_logits)

    def on_validation_epoch_end(self) -> None:
        metrics = {f"val/student_{k}": v for k, v in self.val_student.compute().items()}
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
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.student.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        self.schedule_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, self.schedule_steps)
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
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        self.restored_schedule_steps = checkpoint.get("schedule_steps")

    def on_train_start(self) -> None:
        """A resume with another schedule length (e.g. a larger `trainer.max_steps` to train longer) continues on the
        new schedule from its first step, with a warning.

        The restored optimizer holds the learning rate the old schedule set for the next step (0 at its end). A
        `LambdaLR` (the default schedule) is re-evaluated at the restored step, so that step already uses the new
        schedule. With an unchanged length nothing is touched: the resume stays exact.
        """
        restored, current = self.restored_schedule_steps, self.schedule_steps
        if restored is None or current is None or restored == current:
            return
        log.warning(
            "LR schedule length changed since the checkpoint (saved %d optimizer steps, now %d, from trainer.max_steps "
            "and the batches per step): from step %d on, the learning rate follows the %d-step schedule",
            restored,
            current,
            self.trainer.global_step,
            current,
        )
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LambdaLR):
                steps = scheduler.last_epoch
                lrs = [base * lr_lambda(steps) for base, lr_lambda in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
                for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                    group["lr"] = lr


def mean_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """The hidden-state cosine term: `cosine_hidden_loss` averaged over the real tokens."""
    return cosine_hidden_loss(student_hidden, teacher_hidden).mean()


def check_objective(
    temperature: float,
    alpha_ce: float,
    alpha_mlm: float,
    alpha_cos: float,
    alpha_mse: float,
    kl_positions: str,
    teacher_dtype: str,
    extra_term_weights: Sequence[float] = (),
) -> None:
    """Raise ValueError naming the `distill.*` key, its value and the allowed range."""
    if not is_number(temperature) or not (0 < temperature < math.inf):
        raise ValueError(f"distill.temperature={temperature!r} is not allowed: it must be a finite number > 0")
    alphas = {"alpha_ce": alpha_ce, "alpha_mlm": alpha_mlm, "alpha_cos": alpha_cos, "alpha_mse": alpha_mse}
    alphas |= {f"extra_terms[{i}].weight": weight for i, weight in enumerate(extra_term_weights)}
    for key, value in alphas.items():
        if not is_number(value) or not (0 <= value < math.inf):
            raise ValueError(f"distill.{key}={value!r} is not allowed: loss weights must be finite numbers >= 0")
    if not any(value > 0 for value in alphas.values()):
        raise ValueError(f"distill loss weights are all zero ({alphas}): at least one must be > 0")
    if kl_positions not in ("all", "masked"):
        raise ValueError(f"distill.kl_positions={kl_positions!r} is not allowed: use 'all' or 'masked'")
    if teacher_dtype not in TEACHER_DTYPES:
        raise ValueError(f"distill.teacher_dtype={teacher_dtype!r} is not allowed: use one of {list(TEACHER_DTYPES)}")


def is_number(value: Any) -> bool:
    """An int or float (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_step_options(vocab_chunk_rows: int | None, compile_mode: str) -> None:
    """Raise ValueError naming the `distill.*` key of a bad speed option, its value and what is allowed."""
    if vocab_chunk_rows is not None and (
        isinstance(vocab_chunk_rows, bool) or not isinstance(vocab_chunk_rows, int) or vocab_chunk_rows < 1
    ):
        raise ValueError(f"distill.vocab_chunk_rows={vocab_chunk_rows} is not allowed: use null or an integer >= 1")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"distill.compile_mode={compile_mode!r} is not allowed: use one of {list(COMPILE_MODES)}")
