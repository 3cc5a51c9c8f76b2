"""One run per run directory at a time: a Hydra callback that locks `hydra.run.dir` before Hydra writes anything into
it (its `.hydra/` config copies, the log file) and keeps the lock until the run ends; in a multirun, each job's
directory while the job runs. A second launch into a directory in use is refused at once, naming the first's pid
(`distil.run.folder_lock`), and leaves the first run's files as they were.

Only the process launched as global rank 0 takes the lock: the processes a launcher starts for other ranks (torchrun,
srun, Lightning's DDP children, which re-run the command in the same directory) take none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from distil.run.folder_lock import FolderInUseError, FolderLock
from distil.run.launch import is_launched_rank_zero

RUN_LOCK_FILE = ".distil.lock"  # in the run directory: held while a run writes it


class RunDirLock(Callback):
    """Holds the lock of the run directory (RUN mode) or of each job's directory (MULTIRUN) while it is written."""

    def __init__(self) -> None:
        self.lock: FolderLock | None = None

    def acquire(self, directory: str) -> None:
        """Take the lock of `directory`, or end the process with the refusal as its last line: Hydra turns an
        exception of a callback into a warning and runs the job anyway, but lets SystemExit through."""
        if not is_launched_rank_zero():
            return
        try:
            self.lock = FolderLock(Path(directory) / RUN_LOCK_FILE, directory, "hydra.run.dir").__enter__()
        except FolderInUseError as error:
            raise SystemExit(f"{type(error).__name__}: {error}") from None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.acquire(config.hydra.run.dir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.release()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self.acquire(config.hydra.runtime.output_dir)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self.release()
