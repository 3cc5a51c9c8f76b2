"""One run directory for all processes of a run, however they were started, and a clean slate for the next job.

- torchrun and srun start every process themselves and each one composes the config: a directory named by the clock
  can differ between processes and nodes. All processes read the same DISTIL_RUN_DIR instead (conf/hydra/default.yaml;
  the scripts in scripts/ set it once per launch). `check_run_dir_is_shared` stops a process of rank > 0 that has
  neither DISTIL_RUN_DIR nor `hydra.run.dir`, before it writes anything of its own.
- Lightning's own launcher (`trainer.devices=N`, strategy ddp) re-runs `python -m distil.train` for local ranks > 0
  with `sys.argv[1:]` plus `hydra.run.dir=<HydraConfig run.dir>` (lightning.fabric.strategies.launchers.
  subprocess_script). In a multirun job that directory is not the job's, and sys.argv holds `-m` and the sweep lists:
  every child would start a sweep of its own and the rendezvous would hang. `pinned_job` makes that command re-run
  exactly this job (its own overrides, RUN mode) in this job's directory, through DISTIL_RUN_DIR, which the
  `hydra.run.dir` Lightning reads resolves to.
- Lightning leaves the process group initialised after fit, and its launcher leaves MASTER_PORT & co. in the
  environment: the next job of a multirun would join a group whose peers have exited. `pinned_job` destroys the group
  and restores those variables when the job ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

RUN_DIR_ENV = "DISTIL_RUN_DIR"
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")  # set by Lightning's launcher
RANK_ENV = ("RANK", "SLURM_PROCID", "NODE_RANK")  # torchrun, srun, Lightning's multi-node launch


def is_launched_rank_zero() -> bool:
    """True in the process of global rank 0 as it was launched; False in a process a launcher started for another
    rank (torchrun's RANK, srun's SLURM_PROCID, the node of a multi-node launch, Lightning's LOCAL_RANK children)."""
    return all(os.environ.get(name, "0") == "0" for name in (*RANK_ENV, "LOCAL_RANK"))


def check_run_dir_is_shared() -> None:
    """Raise when this process has rank > 0 from an external launcher but its run directory came from its own clock."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.RUN or RUN_DIR_ENV in os.environ:
        return
    if any(override.startswith("hydra.run.dir=") for override in hydra_cfg.overrides.hydra):
        return
    ranks = {name: os.environ[name] for name in RANK_ENV if os.environ.get(name, "0") != "0"}
    if ranks:
        raise RuntimeError(
            f"this process has {', '.join(f'{k}={v}' for k, v in ranks.items())} but its run directory "
            f"{hydra_cfg.runtime.output_dir} comes from its own clock, so processes would write to different "
            f"directories: set {RUN_DIR_ENV} (or hydra.run.dir) to the same path in every process (see scripts/)"
        )


def child_process_argv() -> list[str]:
    """The command line that re-runs this multirun job alone: the job's primary config (path and name), any
    `--config-dir`, the job's own overrides (the values of this job, not the sweep lists) and the Hydra overrides, in
    RUN mode; all read from the job's public Hydra config (`hydra.job`, `hydra.runtime.config_sources`,
    `hydra.overrides`)."""
    hydra_cfg = HydraConfig.get()
    flags = [f"--config-name={hydra_cfg.job.config_name}"]
    for source in hydra_cfg.runtime.config_sources:
        location = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            flags.append(f"--config-path={location}")
        elif source.provider == "command-line":
            flags.append(f"--config-dir={location}")
    hydra_overrides = [o for o in hydra_cfg.overrides.hydra if not o.startswith("hydra.mode=")]
    return [sys.argv[0], *flags, *hydra_cfg.overrides.task, *hydra_overrides, "hydra.mode=RUN"]


def release_process_group() -> None:
    """Destroy the default process group, if one was initialised in this process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def pinned_job() -> Iterator[None]:
    """Run one Hydra job so that processes Lightning starts for it re-run this job in this job's directory; on exit,
    release the process group and restore sys.argv and the launcher's environment variables."""
    check_run_dir_is_shared()
    hydra_cfg = HydraConfig.get()
    saved_argv = list(sys.argv)
    saved_env = {name: os.environ.get(name) for name in (RUN_DIR_ENV, *LAUNCHER_ENV)}
    os.environ[RUN_DIR_ENV] = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = child_process_argv()
    try:
        yield
    finally:
        release_process_group()
        sys.argv = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
