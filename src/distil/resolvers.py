"""OmegaConf resolvers used by the YAML configs in conf/ (registered when `distil` is imported)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> str:
    """The repository root (the folder holding conf/) for a source checkout, else the current directory."""
    root = Path(__file__).resolve().parents[2]
    return str(root) if (root / "conf" / "train.yaml").is_file() else os.getcwd()


def local_or_hub(local_path: str, hub_id: str) -> str:
    """`local_path` when it exists on disk, else the public hub id that holds the same kind of asset."""
    return local_path if Path(local_path).exists() else hub_id


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("distil.project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("distil.local_or_hub", local_or_hub, replace=True)
