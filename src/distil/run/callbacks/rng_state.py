"""Random-number-generator state in checkpoints, so dropout after a resume draws what it would have drawn.

Lightning checkpoints hold model, optimizer, schedulers, loop counters and callback/data-module states, but no RNG
state. This callback stores the Python, NumPy, torch CPU and CUDA generator states of every rank (as plain lists
and tensors, so the checkpoint stays `weights_only` loadable) and puts them back just before the first training
batch after a resume, i.e. after Lightning has created the dataloader iterators (each creation draws a seed from
the torch generator).

Validation also draws from the torch generator (one seed per dataloader iterator), so the training stream of random
numbers would depend on when validation ran. The state taken at the end of every training batch is therefore put
back before the next training batch whenever a validation ran in between: training randomness is independent of
validation, and a run resumed from a checkpoint written at step k continues exactly like the uninterrupted run.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when initialised) CUDA generator states, as plain values and tensors."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_from_ranks(value: Any) -> list[Any]:
    """`value` of every rank, in rank order (just `[value]` when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


class RngStateCheckpoint(pl.Callback):
    """Saves every rank's RNG state in checkpoints and restores it on resume (see the module docstring)."""

    def __init__(self) -> None:
        self.after_last_batch: dict[str, Any] | None = None
        self.pending_restore: dict[str, Any] | None = None
        self.validated_since_last_batch = False

    def state_dict(self) -> dict[str, Any]:
        state = self.after_last_batch if self.after_last_batch is not None else capture_rng_state()
        return {"ranks": gather_from_ranks(state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.pending_restore = ranks[rank] if rank < len(ranks) else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.pending_restore is not None:
            restore_rng_state(self.pending_restore)
            self.pending_restore = None
        elif self.validated_since_last_batch and self.after_last_batch is not None:
            restore_rng_state(self.after_last_batch)
        self.validated_since_last_batch = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.after_last_batch = capture_rng_state()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated_since_last_batch = True
