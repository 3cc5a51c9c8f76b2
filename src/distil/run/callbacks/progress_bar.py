"""The console progress bar of a run: optimizer step of `max_steps`, time left, training loss and tokens per second."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

SHOWN = {"train/loss": "loss", "train/tokens_per_s": "tokens/s"}  # logged metric -> its name on the bar


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting optimizer steps of `trainer.max_steps` (the stream has no epochs), showing the
    training loss and the token rate; tqdm itself shows the elapsed and the remaining time.

    Lightning's own bar counts micro-batches against a total of optimizer steps, so with `accumulate_grad_batches`
    above 1 it overran its total ("40/25"); a resumed run starts it at the step it resumed from.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.set_description("steps")
        if trainer.max_steps > 0:
            bar.total, bar.initial, bar.n = trainer.max_steps, trainer.global_step, trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if step != bar.n and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.progress_bar_metrics
        return {shown: f"{metrics[name]:.4g}" for name, shown in SHOWN.items() if name in metrics}
