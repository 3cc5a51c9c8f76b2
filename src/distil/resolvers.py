"""OmegaConf resolvers used by the YAML configs in conf/ (registered when `distil` is imported)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from distil.value_checks import check_integer


def project_root() -> str:
    """The repository root (the folder holding conf/) for a source checkout, else the current directory."""
    root = Path(__file__).resolve().parents[2]
    return str(root) if (root / "conf" / "train.yaml").is_file() else os.getcwd()


def local_or_hub(local_path: str, hub_id: str) -> str:
    """`local_path` when it exists on disk, else the public hub id that holds the same kind of asset."""
    return local_path if Path(local_path).exists() else hub_id


def optimizer_steps(micro_batches: int, accumulate_grad_batches: int) -> int:
    """Optimizer steps that consume `micro_batches` batches with `accumulate_grad_batches` per step: a fixed budget of
    compute whatever the accumulation (e.g. `trainer.max_steps` of a search over `trainer.accumulate_grad_batches`)."""
    check_integer("distil.optimizer_steps: micro_batches", micro_batches, minimum=1)
    check_integer("distil.optimizer_steps: accumulate_grad_batches", accumulate_grad_batches, minimum=1)
    if micro_batches % accumulate_grad_batches:
        raise ValueError(
            f"distil.optimizer_steps: {micro_batches} micro-batches are not a whole number of optimizer steps of "
            f"accumulate_grad_batches={accumulate_grad_batches}; use a divisor of {micro_batches}"
        )
    return micro_batches // accumulate_grad_batches


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("distil.project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("distil.local_or_hub", local_or_hub, replace=True)
    OmegaConf.register_new_resolver("distil.optimizer_steps", optimizer_steps, replace=True)
