"""What a teacher cache was computed from, so that a run never trains on the outputs of anything else.

The fingerprint's fields:

- `teacher`: sha256 of the teacher's config (without where it was read from) and of its weight files' bytes, as
  stored (`*.safetensors`, else `*.bin`): reading the files costs about 1 s per 1.5 GB and never loads a model, so a
  run with a given `student.name_or_path` checks its cache without the teacher's weights in memory. The same weights
  stored in another format or dtype count as another teacher (the cache is refused; write it again);
- `tokenizer`: the vocabulary fingerprint of the shards (`distil.data.tokenization.vocabulary_fingerprint`; training
  checks that `data.tokenizer` has that vocabulary);
- `shards`: sha256 of the training shards' sha256s, dtype and kind (masked or causal rows);
- `max_length`, `seed` (the masking seed, `data.seed`), `mlm_probability`, `mlm_smoothing`: the rows and their masks;
- `temperature`: the teacher's log-probabilities are stored at the distillation temperature T, because the tail mass
  cannot be re-tempered (softmax(z / T') of the tail ids is not a function of their total mass at T);
- `kl_positions`: which positions are cached;
- `k`, `maskings`, `precision`: the cache's own choices. A run has no setting of its own for them (it trains with the
  cache's), so training compares every other field; the writer compares all of them before it continues a partial
  cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers.utils import cached_file

from distil.data.shards import file_sha256
from distil.run.digests import config_sha256, sha256_json

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # the first that matches is what transformers loads
CACHE_CHOICES = ("k", "maskings", "precision")  # fields the cache chooses and a training run does not


def model_folder(name_or_path: str) -> Path:
    """The folder holding the model's config.json: the path itself, or its snapshot in the local hub cache."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    config = cached_file(name_or_path, "config.json", _raise_exceptions_for_connection_errors=False)
    if config is None:
        raise FileNotFoundError(
            f"teacher={name_or_path!r} is neither a folder nor a model in the local hub cache: give the teacher's "
            "folder"
        )
    return Path(config).parent


def teacher_fingerprint(name_or_path: str) -> str:
    """sha256 of the teacher's config (without where it was read from) and of each weight file's name and bytes."""
    folder = model_folder(name_or_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256(config_sha256(config).encode())
    files = next((sorted(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS if any(folder.glob(pattern))), [])
    if not files:
        raise FileNotFoundError(f"teacher={name_or_path!r}: no weight file ({', '.join(WEIGHT_PATTERNS)}) in {folder}")
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}".encode())
    return digest.hexdigest()


def shards_fingerprint(shards_metadata: dict) -> str:
    """sha256 of the training split's shard sha256s, the token dtype and the kind of rows."""
    train = shards_metadata["splits"]["train"]
    return sha256_json(
        [train["shard_sha256"], train["tokens"], shards_metadata["dtype"], bool(shards_metadata.get("causal"))]
    )


def run_fingerprint(
    teacher: str,
    shards_metadata: dict,
    max_length: int,
    seed: int,
    mlm_probability: float,
    mlm_smoothing: float | None,
    temperature: float,
    kl_positions: str,
) -> dict[str, str]:
    """The fields a training run (or the writer) determines (module docstring), as strings. Causal rows are not
    masked: their masking fields are fixed."""
    causal = bool(shards_metadata.get("causal"))
    return {
        "teacher": teacher_fingerprint(teacher),
        "tokenizer": shards_metadata["vocab_fingerprint"],
        "shards": shards_fingerprint(shards_metadata),
        "max_length": str(max_length),
        "seed": str(seed),
        "mlm_probability": "none (causal rows)" if causal else str(float(mlm_probability)),
        "mlm_smoothing": "none (causal rows)" if causal or mlm_smoothing is None else str(float(mlm_smoothing)),
        "temperature": str(float(temperature)),
        "kl_positions": kl_positions,
    }


def differences(recorded: dict[str, str], expected: dict[str, str]) -> list[str]:
    """'field: cache X, this run Y' for every field of `expected` that `recorded` does not hold the same."""
    return [
        f"{name}: cache {recorded.get(name, 'absent')!r}, this run {value!r}"
        for name, value in expected.items()
        if recorded.get(name) != value
    ]


def check_fingerprint(recorded: dict[str, str], expected: dict[str, str], directory) -> None:
    """Raise naming every field in which the cache's fingerprint differs from the run's."""
    found = differences(recorded, expected)
    if found:
        raise ValueError(
            f"teacher cache {directory} was computed from something else than this run uses ({'; '.join(found)}): "
            "point distill.teacher_cache at a cache of this run's teacher, shards and settings, or write one with "
            "`python -m distil.cache_teacher`"
        )
