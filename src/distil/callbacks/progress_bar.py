"""The console progress bar of a run: step of `max_steps`, time left, training loss and tokens per second."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

SHOWN = {"train/loss": "loss", "train/tokens_per_s": "tokens/s"}  # logged metric -> its name on the bar


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting training steps (the stream has no epochs), showing the training loss and the
    token rate; tqdm itself shows the step of `max_steps`, the elapsed and the remaining time."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.set_description("steps")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.progress_bar_metrics
        return {shown: f"{metrics[name]:.4g}" for name, shown in SHOWN.items() if name in metrics}
