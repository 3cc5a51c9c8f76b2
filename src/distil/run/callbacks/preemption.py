"""On SIGTERM, SIGUSR1 or SIGUSR2: finish the current optimizer step, write a checkpoint, requeue on SLURM, exit.

What Lightning does on its own (2.x): on SIGTERM it raises `SIGTERMException` at the end of the current batch (or in
the middle of a validation) and exits with status 0 *without* a checkpoint. Under SLURM with auto-requeue it also
catches SIGUSR1, but writes `hpc_ckpt_N.ckpt` from inside the signal handler, i.e. wherever the step happens to be
(weights may be updated while the step counter and the data position are not), into the run directory rather than
the checkpoint folder. The submitit launcher's USR2 handler requeues and exits on the spot, without a checkpoint.

This callback takes the signals over when training starts (after Lightning and submitit installed theirs) and gives
them back when training ends. Its handler only records the signal. At the next step boundary (`on_train_batch_end`,
where periodic checkpoints are also written, so resuming is exact) it writes `<dirpath>/<filename>.ckpt`
atomically. Then, for a signal other than SIGTERM:
- that had a handler of the job environment before (submitit's USR2 handler), it calls that handler, which
  requeues the job and exits;
- otherwise, under SLURM (`#SBATCH --signal=USR1@120`), it runs `scontrol requeue` for the job.
Finally it raises `Preempted`, which exits with status 128 + signal number (143 for SIGTERM): a preempted run did
not finish, so job runners (Kubernetes, torchrun) must restart it. A signal during a validation is acted on after
the next training step; one before the first training step falls back to Lightning's handling.

With several processes, the decision is all-reduced at every step (any rank signalled -> all save and stop), which
costs one tiny collective per step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Training stopped on a signal after writing its checkpoint; the exit status is 128 + the signal number."""


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` expects (array jobs: ARRAYID_TASKID), or None outside SLURM."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def is_environment_handler(handler: Any) -> bool:
    """A handler installed by the job environment (e.g. submitit), not Lightning's (whose SIGTERM handler does a
    collective broadcast and whose SLURM handler writes a checkpoint of its own) nor a default disposition."""
    return callable(handler) and not type(handler).__module__.startswith("lightning")


def requeue_slurm_job(job_id: str) -> None:
    """Put the SLURM job back in the queue (it restarts with the same job id and script)."""
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job_id)
    else:
        log.error("scontrol requeue %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())


class PreemptionCheckpoint(pl.Callback):
    """Checkpoint-and-exit on preemption signals (see the module docstring).

    Args:
        dirpath: folder of the checkpoint (the run's checkpoint folder, where `resume=auto` looks).
        filename: checkpoint file name without `.ckpt`; each preemption overwrites it (one file at most).
        signals: names of the signals to handle, e.g. ["SIGTERM", "SIGUSR1"].
        slurm_requeue: under SLURM, requeue the job after saving on a signal other than SIGTERM that had no handler.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "preempted",
        signals: list[str] | tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGUSR2"),
        slurm_requeue: bool = True,
    ) -> None:
        unknown = [name for name in signals if name not in signal.Signals.__members__]
        if unknown:
            raise ValueError(f"callbacks.preemption.signals has unknown signal names {unknown} (e.g. SIGTERM, SIGUSR1)")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.signals = [signal.Signals[name].value for name in signals]
        self.slurm_requeue = slurm_requeue
        self.received: int | None = None
        self.previous_handlers: dict[int, Any] = {}

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only records the signal (the checkpoint is written at the next step boundary)."""
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take over the signals from here on (Lightning installs its own handlers just before training starts)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: preemption signals are not handled")
            return
        self.received, self.previous_handlers = None, {}
        for signum in self.signals:
            self.previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self.handle_signal)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # in the middle of gradient accumulation: act at the optimizer step boundary
        signalled = self.received is not None
        if trainer.world_size > 1:
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if signalled:
            self.save_and_stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Give the signals back to the handlers they had before training started."""
        for signum, handler in self.previous_handlers.items():
            if signal.getsignal(signum) == self.handle_signal:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous_handlers = {}

    def save_and_stop(self, trainer: pl.Trainer) -> None:
        """Write the checkpoint, let the environment's own handler requeue (or requeue on SLURM), then stop."""
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state
        signum = self.received if self.received is not None else signal.SIGTERM.value
        name = signal.Signals(signum).name if self.received is not None else "a signal on another rank"
        log.warning(
            "received %s: checkpoint of step %d written to %s; resume with resume=auto and the same hydra.run.dir",
            name,
            trainer.global_step,
            self.path,
        )
        previous = self.previous_handlers.get(signum)
        self.restore_handlers()
        if self.received is not None and signum != signal.SIGTERM and is_environment_handler(previous):
            previous(signum, None)  # e.g. submitit's USR2 handler: requeues the job and exits
        elif self.slurm_requeue and signum != signal.SIGTERM and trainer.is_global_zero and SLURMEnvironment.detect():
            job_id = slurm_job_id()
            if job_id:
                requeue_slurm_job(job_id)
        raise Preempted(128 + int(signum))
