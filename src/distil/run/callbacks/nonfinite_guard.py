"""Skip optimizer steps whose loss or gradients are NaN or inf, count them, and stop after too many in a row.

A skipped step leaves the weights and the optimizer state (Adam moments and step counts) untouched. It still counts
as a step of `trainer.max_steps` and of the LR schedule, like a step skipped by an AMP grad scaler, so the step
counter keeps matching the number of batches consumed and a resume stays exact.

How a step is skipped depends on the optimizer:
- fused optimizers (`torch.optim.AdamW(fused=True)`, `distill.optimizer.fused=true`): the finiteness test and the
  counts stay on the device and the optimizer's `found_inf` flag makes its fused kernel leave the parameters, the
  moments and the step count alone, as under a grad scaler. The host reads each step's counts one step later (a
  copy started without blocking, waited for at the next step, when the device is normally long past it, since the
  next step's forward and backward are already queued), so a warning or the stop comes one step after the bad step
  that caused it, or at the end of training. Always exactly one step: every DDP rank stops at the same step.
- other optimizers: the gradients are set to None (torch optimizers leave parameters without gradients alone),
  which needs the decision on the host before `optimizer.step`: one device-to-host copy of a bool per step. On a
  GPU that stops the host from queueing the next step's kernels while the current step finishes.

A run that ends with every one of its steps skipped (fewer than `max_consecutive`, or the whole run) raises
`NonFiniteLossError` at its end too: it applied no optimizer step, and `distil.train` must not export it.

With fp16 loss scaling (`trainer.precision=16-mixed`) only the loss is judged: overflowing gradients are the grad
scaler's business (it skips the step and lowers the scale), a NaN/inf loss is not.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf losses or gradients for `max_consecutive` optimizer steps in a row."""


class DeviceCounts:
    """Skipped steps so far and the current run of consecutive skips, kept on the device, read back a step later.

    `counts` is a (2,) int64 tensor [skipped, consecutive]; `snapshot` holds a host copy of it (started without
    blocking), the optimizer step it is for, and a CUDA event that completes when the copy has landed.
    """

    def __init__(self, skipped: int, consecutive: int, device: torch.device) -> None:
        self.counts = torch.tensor([skipped, consecutive], dtype=torch.int64, device=device)
        self.snapshot: tuple[int, torch.Tensor, torch.cuda.Event | None] | None = None

    def update(self, finite: torch.Tensor, step: int) -> None:
        bad = (~finite).to(torch.int64)
        self.counts = torch.stack([self.counts[0] + bad, (self.counts[1] + 1) * bad])
        host_copy = self.counts.to("cpu", non_blocking=True)
        event = None
        if self.counts.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        self.snapshot = (step, host_copy, event)

    def previous(self) -> tuple[int, int, int] | None:
        """(step, skipped, consecutive) of the snapshot taken at the previous step (None before the first)."""
        if self.snapshot is None:
            return None
        step, host_copy, event = self.snapshot
        if event is not None:
            event.synchronize()  # the copy of one step ago: normally landed long before
        self.snapshot = None
        skipped, consecutive = host_copy.tolist()
        return step, skipped, consecutive

    def read(self) -> tuple[int, int]:
        """(skipped, consecutive) now (waits for the device)."""
        skipped, consecutive = self.counts.tolist()
        return skipped, consecutive


class NonFiniteLossGuard(pl.Callback):
    """Skips optimizer steps with a non-finite loss or gradient norm; raises after `max_consecutive` in a row.

    Args:
        max_consecutive: consecutive skipped steps after which training stops with NonFiniteLossError (>= 1).

    Logs `train/nonfinite_steps` (skipped steps so far in the run). The counts are part of checkpoints.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(
                f"callbacks.nonfinite_guard.max_consecutive={max_consecutive!r} is not allowed: an integer >= 1"
            )
        self.max_consecutive = max_consecutive
        self.skipped_steps = 0
        self.consecutive = 0
        self.last_bad_step = -1
        self.loss_finite: torch.Tensor | None = None
        self.on_device: DeviceCounts | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self.loss_finite = finite if self.loss_finite is None else self.loss_finite & finite

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        finite = self.loss_finite if self.loss_finite is not None else torch.tensor(True)
        self.loss_finite = None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        no_scaler = getattr(trainer.precision_plugin, "scaler", None) is None
        if grads and no_scaler:  # fp16 scalers handle overflowing gradients
            finite = finite.to(grads[0].device) & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if grads and no_scaler and getattr(optimizer, "_step_supports_amp_scaling", False):
            self.skip_on_device(trainer, optimizer, finite)
        else:
            self.skip_on_host(trainer, optimizer, finite)

    def skip_on_device(self, trainer: pl.Trainer, optimizer: Optimizer, finite: torch.Tensor) -> None:
        """Fused optimizer: its kernel skips the update when `found_inf` is 1; the counts are read back later."""
        if self.on_device is None:
            self.on_device = DeviceCounts(self.skipped_steps, self.consecutive, finite.device)
        previous = self.on_device.previous()
        if previous is not None:
            self.take_counts(trainer, *previous)
        optimizer.found_inf = (~finite).to(torch.float32)
        self.on_device.update(finite, trainer.global_step)

    def skip_on_host(self, trainer: pl.Trainer, optimizer: Optimizer, finite: torch.Tensor) -> None:
        """Other optimizers: drop the gradients of a bad step (the one host sync per step)."""
        if bool(finite):
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.take_counts(trainer, trainer.global_step, self.skipped_steps + 1, self.consecutive + 1)

    def take_counts(self, trainer: pl.Trainer, step: int, skipped: int, consecutive: int) -> None:
        """Adopt the counts as of optimizer step `step`; warn about new skips, stop after too many in a row."""
        new_skips = skipped - self.skipped_steps
        self.skipped_steps, self.consecutive = skipped, consecutive
        if consecutive > 0:
            self.last_bad_step = step
        if new_skips > 0:
            log.warning(
                "non-finite loss or gradients: %d optimizer step(s) skipped up to step %d (%d in a row, %d in the run)",
                new_skips,
                step,
                consecutive,
                skipped,
            )
        if consecutive >= self.max_consecutive:
            raise NonFiniteLossError(self.stop_message(trainer))

    def stop_message(self, trainer: pl.Trainer) -> str:
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        return (
            f"the loss or the gradients were NaN/inf for {self.consecutive} optimizer steps in a row (steps "
            f"{self.last_bad_step - self.consecutive + 1}..{self.last_bad_step}; "
            f"callbacks.nonfinite_guard.max_consecutive={self.max_consecutive}); training stopped. The weights were "
            f"not updated by those steps; the last checkpoint is {checkpoint}. Check the data of those steps, lower "
            "distill.optimizer.lr, or use trainer.precision=32-true"
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        skipped = self.on_device.counts[0].float() if self.on_device is not None else float(self.skipped_steps)
        pl_module.log("train/nonfinite_steps", skipped, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take the counts of the last steps, which no later step read back; fail a run none of whose steps was
        applied (its weights are the initial ones: nothing must be exported as if it had trained)."""
        if self.on_device is not None:
            self.take_counts(trainer, trainer.global_step - 1, *self.on_device.read())
        if trainer.global_step > 0 and self.skipped_steps >= trainer.global_step:
            raise NonFiniteLossError(
                f"no optimizer step was applied: all {trainer.global_step} steps of the run had a NaN/inf loss or "
                "gradients and were skipped, so the weights are the initial ones and training failed. Check the "
                "loss settings (distill.temperature, the alphas), distill.optimizer.lr and the data"
            )

    def state_dict(self) -> dict[str, int]:
        """The counts as of the latest optimizer step (read from the device when they are kept there)."""
        counts = self.on_device.read() if self.on_device is not None else (self.skipped_steps, self.consecutive)
        return {"skipped_steps": counts[0], "consecutive": counts[1]}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive = int(state_dict["consecutive"])
        self.on_device = None
