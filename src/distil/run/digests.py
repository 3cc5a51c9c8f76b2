"""sha256 digests of what a cache of teacher outputs was made from (`distil.tasks.teacher_cache`,
`distil.topk_cache.fingerprint`): JSON values and model configs."""

from __future__ import annotations

import hashlib
import json

CONFIG_FIELDS_IGNORED = ("_name_or_path", "transformers_version")  # where a model was read from, not what it is


def sha256_json(value) -> str:
    """sha256 of `value` as JSON with sorted keys (anything JSON cannot hold as its `str`)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def config_sha256(config: dict) -> str:
    """sha256 of a model config's fields (`config.to_dict()` or config.json), without where it was read from."""
    return sha256_json({key: value for key, value in config.items() if key not in CONFIG_FIELDS_IGNORED})
