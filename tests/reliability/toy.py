"""A toy Lightning regression (one Linear layer) for fast in-process tests of the reliability callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from distil.run.checkpoint_io import AtomicCheckpointIO


class ToyRegression(pl.LightningModule):
    """MSE of a Linear(4, 1); the loss is multiplied by NaN at the optimizer steps listed in `nan_steps`.
    AdamW with `fused=True` uses its single fused kernel (on the CPU too)."""

    def __init__(self, nan_steps: Iterable[int] = (), fused: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.nan_steps = set(nan_steps)
        self.fused = fused

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1, fused=self.fused)


def toy_loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


class OnStep(pl.Callback):
    """Calls `action(trainer, pl_module)` at the start of the training batch of optimizer step `step`."""

    def __init__(self, step: int, action: Callable[[pl.Trainer, pl.LightningModule], None]) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.action(trainer, pl_module)


class WeightsPerStep(pl.Callback):
    """Copies of the Linear weight after every optimizer step."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append(pl_module.layer.weight.detach().clone())


def toy_trainer(root: Path, max_steps: int, callbacks: list[pl.Callback], **trainer_args) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=root,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **trainer_args,
    )
