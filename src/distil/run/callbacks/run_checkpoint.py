"""Lightning's ModelCheckpoint, plus a last.ckpt of the final step when the run length is not a multiple of the
checkpoint interval (Lightning saves the periodic checkpoints and last.ckpt only at multiples of
`every_n_train_steps`, so the last steps of such a run would exist in no checkpoint)."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose last.ckpt always holds the final step of a finished run (same arguments)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # the final step is not saved yet
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
