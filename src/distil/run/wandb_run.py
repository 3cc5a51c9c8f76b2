"""Weights & Biases for `python -m distil.train`: the logger behind conf/logger/wandb.yaml, the whole resolved config
as the run config, and the run finished at the end of every job, also when the job fails.

Nothing here needs the network: without an API key the run is written offline into the run directory
(`<run dir>/wandb/offline-run-*`, upload later with `wandb sync`). The API key is only ever looked up, never copied
into the config, the logs or the checkpoints.
"""

from __future__ import annotations

import hashlib
import netrc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

WANDB_MODES = ("online", "offline", "disabled")
DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def has_wandb_api_key() -> bool:
    """True when a W&B API key is configured: WANDB_API_KEY is set, or the netrc file ($NETRC, else ~/.netrc, which
    `wandb login` writes) has a password for the W&B host ($WANDB_BASE_URL, else api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).netloc
    try:
        credentials = netrc.netrc(netrc_path).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(credentials and credentials[2])


def default_mode() -> str:
    """$WANDB_MODE when set; else online when an API key is configured; else offline (no network needed)."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_api_key() else "offline")


def multirun_group() -> str | None:
    """The group shared by all jobs of one Hydra multirun: the name of its sweep directory. None for a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def run_id_of(run_dir: str) -> str:
    """A W&B run id fixed by the run directory: a run resumed in its own directory continues the same W&B run."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def wandb_logger(
    *, save_dir: str, mode: str | None = None, group: str | None = None, id: str | None = None, **kwargs: Any
) -> WandbLogger:
    """Lightning's WandbLogger with `mode` (None: `default_mode()`), `group` (None: `multirun_group()`) and the run
    `id` (None: `run_id_of(save_dir)`, resumed when it exists) filled in.

    Other keyword arguments are WandbLogger's (project, log_model, ...) or `wandb.init`'s (entity, tags,
    job_type, ...). The run itself starts on global rank 0 only, when Lightning first logs.
    """
    mode = mode or default_mode()
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode} is not allowed: it must be one of {', '.join(WANDB_MODES)}")
    import wandb

    logger = WandbLogger(
        save_dir=save_dir,
        mode=mode,
        group=group or multirun_group(),
        id=id or run_id_of(save_dir),
        resume="allow",
        settings=wandb.Settings(quiet=True),  # no run history and summary at the end: distil.train prints its table
        **kwargs,
    )
    # Lightning 2.6 always hands wandb.init `anonymous` (None unless set), which wandb 0.31 warns has no effect.
    logger._wandb_init.pop("anonymous", None)
    return logger


def log_run_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the whole resolved config as the run config of every W&B logger (rank 0 only, like all logging)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))


def finish_wandb_run(exit_code: int) -> None:
    """`wandb.finish` the run of this process, if one was started: writes the summary (offline too) and lets the next
    job of a multirun start a run of its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")  # not imported: no run was started (and a CSV-only job does not pay the import)
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


@contextmanager
def finished_wandb_run() -> Iterator[None]:
    """Finish the W&B run when the block ends: exit code 0 on success, 1 when it raised (the error propagates)."""
    try:
        yield
    except BaseException:
        finish_wandb_run(exit_code=1)
        raise
    finish_wandb_run(exit_code=0)
