"""The resolved run config, as plain dicts and lists, in every checkpoint (`checkpoint["run_config"]`).

Plain values keep checkpoints loadable with `torch.load(weights_only=True)` (an OmegaConf object would need the full
unpickler), and `python -m distil.export` reads the teacher's name from it. Values under keys that look like
credentials (ending in api_key, token, secret, password) are replaced by "<redacted>" so they never reach a checkpoint.
"""

from __future__ import annotations

import re
from typing import Any

import lightning.pytorch as pl

SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password)$", re.IGNORECASE)  # api_key, hf_token, ...
REDACTED = "<redacted>"


def is_secret_key(key: str) -> bool:
    """True for credential-like keys (api_key, wandb_api_key, hf_token), False for e.g. token_counts."""
    return bool(SECRET_KEY.search(key))


def redact_secrets(value: Any) -> Any:
    """A copy of a plain config tree with the values of credential-like keys replaced by REDACTED."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) and v is not None else redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


class RunConfigInCheckpoint(pl.Callback):
    """Adds `run_config` (a plain, secret-free dict) to every checkpoint written."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = redact_secrets(run_config)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["run_config"] = self.run_config
