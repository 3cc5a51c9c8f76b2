"""Pre-tokenized shard format written by `python -m distil.prepare` and read by `ShardRows`.

A shard directory holds:
  metadata.json      tokenizer fingerprint, dtype, special ids, and per split the shard files and token counts
  train-00000.bin    token ids of training documents, each document followed by [SEP], raw little-endian `dtype`
  validation-00000.bin   the same for the held-out documents
  token_counts.npy   int64 count of every vocabulary id over the training split (for mlm_smoothing)

The dtype is the smallest unsigned type that holds every id of the vocabulary: uint16 only when the vocabulary has
at most 65,536 ids, else uint32, so ids are never truncated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FORMAT = "distil-token-shards"
VERSION = 1
METADATA_FILE = "metadata.json"
TOKEN_COUNTS_FILE = "token_counts.npy"
SPLITS = ("train", "validation")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id 0..vocab_size-1 fits in 16 bits, else uint32."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size}; allowed: >= 1")
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size={vocab_size} does not fit uint32 ids (allowed: <= {2**32})")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def vocabulary_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's (token, id) pairs: equal only for tokenizers producing the same ids."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def write_metadata(directory: Path, metadata: dict) -> None:
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(directory: str | Path) -> dict:
    """The metadata of a shard directory; errors say what is missing and how to create it."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"shards_dir={str(directory)!r} has no {METADATA_FILE}: create it with "
            f"`python -m distil.prepare output_dir={directory}`"
        )
    metadata = json.loads(path.read_text(encoding="utf-8"))
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(
            f"{path} is not a {FORMAT} v{VERSION} directory (found {metadata.get('format')} "
            f"v{metadata.get('version')}); re-create it with `python -m distil.prepare`"
        )
    return metadata


def check_tokenizer(metadata: dict, tokenizer, tokenizer_name: str, directory) -> None:
    """The shards must have been written by a tokenizer with the same vocabulary as the one training uses."""
    fingerprint = vocabulary_fingerprint(tokenizer)
    if metadata["vocab_fingerprint"] != fingerprint or metadata["vocab_size"] != len(tokenizer):
        raise ValueError(
            f"shards in {directory} were tokenized with {metadata['tokenizer']!r} ({metadata['vocab_size']} ids), "
            f"whose vocabulary differs from data.tokenizer={tokenizer_name!r} ({len(tokenizer)} ids); "
            "re-run `python -m distil.prepare` with this tokenizer or point data.tokenizer at the shards' tokenizer"
        )


def open_split(directory: str | Path, metadata: dict, split: str) -> list[np.ndarray]:
    """Read-only memory maps of a split's shards (empty shards are skipped)."""
    dtype = np.dtype(metadata["dtype"])
    maps = []
    for name in metadata["splits"][split]["shards"]:
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in {METADATA_FILE} is missing; re-run distil.prepare")
        if path.stat().st_size:
            maps.append(np.memmap(path, dtype=dtype, mode="r"))
    return maps
