"""DistillationModule: a frozen teacher, a trainable student, and the DistilBERT training objective.

One training step:
    teacher encoder (no_grad) and student encoder over the batch
    -> vocabulary heads of both, only at the positions a loss covers
    -> soft-target KL (x T^2), masked-LM cross-entropy, hidden-state cosine, optional logits MSE
    -> weighted sum (alphas), each term logged on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from distil.modules.fused_vocab_loss import VocabLossWeights, chunk_loss_terms, fused_vocab_losses
from distil.modules.losses import cosine_hidden_loss, logits_mse_loss, mlm_loss, soft_target_loss
from distil.modules.low_precision_layer_norm import use_low_precision_layer_norm
from distil.modules.masked_lm_parts import encoder_of, head_features_of, output_projection_of, vocab_head_of
from distil.modules.metrics import MaskedLMMetrics, Top1Agreement
from distil.modules.row_index import RowIndex, row_index_of, select_rows, with_row_index

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions that were not masked
TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's modes


class DistillationModule(pl.LightningModule):
    """Trains `student` to imitate `teacher` with the DistilBERT loss.

    Args:
        teacher: masked-LM teacher; frozen, kept in eval mode, run under no_grad, left out of checkpoints.
        student: masked-LM student (from `build_student`); the only trainable parameters.
        optimizer: `params -> Optimizer` (a Hydra partial of e.g. torch.optim.AdamW).
        scheduler: `(optimizer, total_steps) -> LRScheduler`, stepped every optimizer step; None for a constant LR.
        temperature: softmax temperature T of the soft targets (> 0).
        alpha_ce: weight of the soft-target KL term.
        alpha_mlm: weight of the supervised masked-LM cross-entropy.
        alpha_cos: weight of the cosine loss between last hidden states.
        alpha_mse: weight of the MSE between logits.
        kl_positions: "all" non-padding positions (the published run) or only the "masked" ones (cheaper).
        teacher_dtype: dtype the teacher's weights are kept in: "float32", "bfloat16" or "float16".
        row_index_on_host: find the masked and real positions on the host copy of each batch before it moves to the
            device (no device sync, static shapes; see `row_index.py`); False selects them with masks on the device.
        skip_full_attention_mask: pass no attention mask to the encoders for batches without padding, so SDPA can
            use its flash kernel (padding is known from the row index's length, without a device sync).
        vocab_chunk_rows: rows per chunk of the fused vocabulary projection + loss (`fused_vocab_loss.py`); full
            logits are never held; None computes the logits of all selected rows at once, then the losses.
        low_precision_layer_norm: under autocast, LayerNorms of both models compute in the autocast dtype (bf16)
            instead of fp32, so the residual stream stays bf16 (`low_precision_layer_norm.py`).
        compile: `torch.compile` the teacher and student encoders, the cosine loss and the fused per-chunk loss math.
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
        teacher_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        row_index_on_host: bool = True,
        skip_full_attention_mask: bool = True,
        vocab_chunk_rows: int | None = None,
        low_precision_layer_norm: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        check_objective(temperature, alpha_ce, alpha_mlm, alpha_cos, alpha_mse, kl_positions, teacher_dtype)
        check_step_options(vocab_chunk_rows, compile_mode)
        self.save_hyperparameters(ignore=["teacher", "student", "optimizer", "scheduler"])
        self.teacher = teacher.to(TEACHER_DTYPES[teacher_dtype]).eval().requires_grad_(False)
        self.student = student
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.temperature = temperature
        self.alphas = {"ce": alpha_ce, "mlm": alpha_mlm, "cos": alpha_cos, "mse": alpha_mse}
        self.kl_positions = kl_positions
        self.teacher_encoder, self.teacher_head = encoder_of(teacher), vocab_head_of(teacher)
        self.student_encoder, self.student_head = encoder_of(student), vocab_head_of(student)
        self.teacher_features, self.teacher_projection = head_features_of(teacher), output_projection_of(teacher)
        self.student_features, self.student_projection = head_features_of(student), output_projection_of(student)
        self.row_index_on_host = row_index_on_host
        self.skip_full_attention_mask = skip_full_attention_mask
        self.vocab_loss_weights = (
            None
            if vocab_chunk_rows is None
            else VocabLossWeights(temperature, alpha_ce, alpha_mlm, alpha_mse, int(vocab_chunk_rows))
        )
        self.chunk_loss_terms = chunk_loss_terms
        self.cosine_loss = cosine_hidden_loss
        if low_precision_layer_norm:
            use_low_precision_layer_norm(self.teacher)
            use_low_precision_layer_norm(self.student)
        if compile:
            self.teacher_encoder = torch.compile(self.teacher_encoder, mode=compile_mode)
            self.student_encoder = torch.compile(self.student_encoder, mode=compile_mode)
            self.cosine_loss = torch.compile(cosine_hidden_loss, mode=compile_mode)
            self.chunk_loss_terms = torch.compile(chunk_loss_terms, mode=compile_mode, dynamic=False)
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

        kl_on_all = (self.alphas["ce"] > 0 or self.alphas["mse"] > 0) and self.kl_positions == "all"
        vocab_rows = rows.real if kl_on_all else rows.masked  # None: every position
        if self.vocab_loss_weights is None:
            losses = self.vocab_losses(student_hidden, teacher_hidden, labels.flatten(), rows, vocab_rows, kl_on_all)
            vocab_loss = sum(self.alphas[name] * value for name, value in losses.items() if self.alphas[name] > 0)
        else:
            losses = self.fused_vocab_losses(student_hidden, teacher_hidden, labels.flatten(), rows, vocab_rows)
            vocab_loss = losses.pop("vocab_loss", 0.0)
        real_student, real_teacher = select_rows(student_hidden, rows.real), select_rows(teacher_hidden, rows.real)
        losses["cos"] = self.cosine_loss(real_student, real_teacher)
        losses["loss"] = vocab_loss + self.alphas["cos"] * losses["cos"] if self.alphas["cos"] > 0 else vocab_loss
        return losses

    def vocab_losses(
        self,
        student_hidden: torch.Tensor,
        teacher_hidden: torch.Tensor,
        flat_labels: torch.Tensor,
        rows: RowIndex,
        vocab_rows: torch.Tensor | None,
        kl_on_all: bool,
    ) -> dict[str, torch.Tensor]:
        """The logit-level terms from the logits of all `vocab_rows` at once (None: every position)."""
        losses: dict[str, torch.Tensor] = {}
        student_logits = self.student_head(select_rows(student_hidden, vocab_rows))
        if self.alphas["ce"] > 0 or self.alphas["mse"] > 0:
            with torch.no_grad():
                teacher_logits = self.teacher_head(select_rows(teacher_hidden, vocab_rows))
            if self.alphas["ce"] > 0:
                losses["ce"] = soft_target_loss(student_logits, teacher_logits, self.temperature)
            if self.alphas["mse"] > 0:
                losses["mse"] = logits_mse_loss(student_logits, teacher_logits)
        if kl_on_all:  # the masked rows' places among the selected rows (both indexes ascend)
            masked_in_rows = rows.masked if vocab_rows is None else torch.searchsorted(vocab_rows, rows.masked)
            student_logits = student_logits.index_select(0, masked_in_rows)
        losses["mlm"] = mlm_loss(student_logits, flat_labels.index_select(0, rows.masked))
        return losses

    def fused_vocab_losses(
        self,
        student_hidden: torch.Tensor,
        teacher_hidden: torch.Tensor,
        flat_labels: torch.Tensor,
        rows: RowIndex,
        vocab_rows: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The logit-level terms and their weighted sum "vocab_loss", projected and reduced chunk by chunk."""
        if not any(self.alphas[name] > 0 for name in ("ce", "mlm", "mse")):
            return {}
        needs_teacher = self.alphas["ce"] > 0 or self.alphas["mse"] > 0
        teacher_features = None
        if needs_teacher:
            with torch.no_grad():
                teacher_features = self.teacher_features(select_rows(teacher_hidden, vocab_rows))
        return fused_vocab_losses(
            self.student_features(select_rows(student_hidden, vocab_rows)),
            self.student_projection(),
            teacher_features,
            self.teacher_projection(),
            select_rows(flat_labels, vocab_rows),
            rows.masked.numel(),
            self.vocab_loss_weights,
            self.chunk_loss_terms,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.distillation_losses(batch)
        self.log_dict({f"train/{'loss' if k == 'loss' else 'loss_' + k}": v for k, v in losses.items()})
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        masked = batch["labels"] != IGNORE_INDEX
        labels = batch["labels"][masked]
        teacher_hidden = self.teacher_encoder(batch["input_ids"], batch["attention_mask"])
        student_hidden = self.student_encoder(batch["input_ids"], batch["attention_mask"])
        teacher_logits = self.teacher_head(teacher_hidden[masked])
        student_logits = self.student_head(student_hidden[masked])
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


def check_objective(
    temperature: float,
    alpha_ce: float,
    alpha_mlm: float,
    alpha_cos: float,
    alpha_mse: float,
    kl_positions: str,
    teacher_dtype: str,
) -> None:
    """Raise ValueError naming the `distill.*` key, its value and the allowed range."""
    if not temperature > 0:
        raise ValueError(f"distill.temperature={temperature} is not allowed: it must be > 0")
    alphas = {"alpha_ce": alpha_ce, "alpha_mlm": alpha_mlm, "alpha_cos": alpha_cos, "alpha_mse": alpha_mse}
    for key, value in alphas.items():
        if not value >= 0:
            raise ValueError(f"distill.{key}={value} is not allowed: loss weights must be >= 0")
    if not any(value > 0 for value in alphas.values()):
        raise ValueError(f"distill alphas are all zero ({alphas}): at least one loss weight must be > 0")
    if kl_positions not in ("all", "masked"):
        raise ValueError(f"distill.kl_positions={kl_positions!r} is not allowed: use 'all' or 'masked'")
    if teacher_dtype not in TEACHER_DTYPES:
        raise ValueError(f"distill.teacher_dtype={teacher_dtype!r} is not allowed: use one of {list(TEACHER_DTYPES)}")


def check_step_options(vocab_chunk_rows: int | None, compile_mode: str) -> None:
    """Raise ValueError naming the `distill.*` key of a bad speed option, its value and what is allowed."""
    if vocab_chunk_rows is not None and not vocab_chunk_rows >= 1:
        raise ValueError(f"distill.vocab_chunk_rows={vocab_chunk_rows} is not allowed: use null or an integer >= 1")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"distill.compile_mode={compile_mode!r} is not allowed: use one of {list(COMPILE_MODES)}")
