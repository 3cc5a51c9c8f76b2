"""When an exception ends training between two optimizer steps, write the training state first: the steps since the
last periodic checkpoint are kept, and `resume=auto` continues from there once the cause is fixed.

The typical case is a record that cannot be read (invalid JSON, bytes that are not UTF-8) reached at step 30 of a
run whose last checkpoint is of step 0: the reader raises while the next batch is fetched, after step 30 is complete,
so the weights, the optimizer, the schedule and the data position all describe step 30. It is written only where
that holds and writing cannot make things worse; otherwise the log says why not:
- inside an optimizer step (the forward, backward or update raised: the step is half done, the batch is counted as
  consumed), during validation, or before the first step;
- with several processes (a checkpoint is a collective: the other ranks may be stuck elsewhere);
- when the exception is a preemption (which wrote its own checkpoint) or a full disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from distil.run.callbacks.preemption import Preempted
from distil.run.checkpoint_io import is_no_space

log = logging.getLogger(__name__)


class ExceptionCheckpoint(pl.Callback):
    """Writes `<dirpath>/<filename>.ckpt` when training ends by an exception between two optimizer steps (see the
    module docstring).

    Args:
        dirpath: folder of the checkpoint (the run's checkpoint folder, where `resume=auto` looks).
        filename: checkpoint file name without `.ckpt`; each such exception overwrites it.
    """

    def __init__(self, dirpath: str, filename: str = "on_exception") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.between_steps = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self.between_steps = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.between_steps = (batch_idx + 1) % trainer.accumulate_grad_batches == 0

    def why_not(self, trainer: pl.Trainer, exception: BaseException) -> str | None:
        """Why no checkpoint may be written now (None: it may)."""
        if isinstance(exception, Preempted):
            return "the preemption wrote its own"
        if is_no_space(exception):
            return "the disk is full"
        if trainer.world_size > 1:
            return f"{trainer.world_size} processes run, and a checkpoint needs all of them"
        if trainer.global_step == 0:
            return "no optimizer step was taken yet"
        if trainer.sanity_checking or trainer.validating or not self.between_steps:
            return "it was raised inside an optimizer step or a validation, whose state is half updated"
        return None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        reason = self.why_not(trainer, exception)
        if reason is not None:
            log.warning(
                "%s ended training at step %d; no checkpoint written: %s",
                type(exception).__name__,
                trainer.global_step,
                reason,
            )
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        except Exception as error:  # the original exception is the one to report
            log.error(
                "%s ended training at step %d; writing %s failed too: %s",
                type(exception).__name__,
                trainer.global_step,
                self.path,
                error,
            )
            return
        log.warning(
            "%s ended training after step %d: the state of that step is in %s; fix the cause and continue with "
            "resume=auto and the same hydra.run.dir",
            type(exception).__name__,
            trainer.global_step,
            self.path,
        )
