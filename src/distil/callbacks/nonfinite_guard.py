"""Skip optimizer steps whose loss or gradients are NaN or inf, count them, and stop after too many in a row.

A skipped step leaves the weights and the optimizer state (Adam moments and step counts) untouched: the gradients
are set to None, and torch optimizers leave parameters without gradients alone. It still counts as a step of
`trainer.max_steps` and of the LR schedule, like a step skipped by an AMP grad scaler, so the step counter keeps
matching the number of batches consumed and a resume stays exact.

With fp16 loss scaling (`trainer.precision=16-mixed`) only the loss is judged: overflowing gradients are the grad
scaler's business (it skips the step and lowers the scale), a NaN/inf loss is not.

Cost: one device-to-host copy of a single bool per optimizer step (the skip decision must be known on the host
before `optimizer.step`). On a GPU that stops the host from queueing the next step's kernels while the current
step finishes; the loss, the gradient norms and the finiteness test themselves stay on the device. A sync-free
variant exists only for fused optimizers (`found_inf` of `torch.optim.AdamW(fused=True)`), which this project does
not require.
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
        self.loss_finite: torch.Tensor | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self.loss_finite = finite if self.loss_finite is None else self.loss_finite & finite

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        finite = self.loss_finite if self.loss_finite is not None else torch.tensor(True)
        self.loss_finite = None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and getattr(trainer.precision_plugin, "scaler", None) is None:  # fp16 scalers handle overflow
            finite = finite.to(grads[0].device) & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if bool(finite):  # the one host sync per step
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.consecutive += 1
        log.warning(
            "non-finite loss or gradients at step %d: optimizer step skipped (%d in a row, %d in this run)",
            trainer.global_step,
            self.consecutive,
            self.skipped_steps,
        )
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(self.stop_message(trainer))

    def stop_message(self, trainer: pl.Trainer) -> str:
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        return (
            f"the loss or the gradients were NaN/inf for {self.consecutive} optimizer steps in a row (steps "
            f"{trainer.global_step - self.consecutive + 1}..{trainer.global_step}; "
            f"callbacks.nonfinite_guard.max_consecutive={self.max_consecutive}); training stopped. The weights were "
            f"not updated by those steps; the last checkpoint is {checkpoint}. Check the data of those steps, lower "
            "distill.optimizer.lr, or use trainer.precision=32-true"
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("train/nonfinite_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive = int(state_dict["consecutive"])
