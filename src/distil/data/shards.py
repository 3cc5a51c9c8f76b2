"""Pre-tokenized shard format written by `python -m distil.prepare` and read by `ShardRows`.

A shard directory holds:
  metadata.json      tokenizer fingerprint, dtype, special ids, and per split the shard files (with their sizes in
                     bytes and sha256s) and token counts
  train-00000.bin    token ids of training documents, each document followed by [SEP], raw little-endian `dtype`
  validation-00000.bin   the same for the held-out documents
  token_counts.npy   int64 count of every vocabulary id over the training split (for mlm_smoothing)

The dtype is the smallest unsigned type that holds every id of the vocabulary: uint16 only when the vocabulary has
at most 65,536 ids, else uint32, so ids are never truncated. Readers compare every shard's size with the metadata
before reading (a truncated shard is named at once, not found at the end of a pass), and its sha256 too unless the
shards are large (`verify_at_start`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from distil.data.tokenization import vocabulary_fingerprint

log = logging.getLogger(__name__)

FORMAT = "distil-token-shards"
VERSION = 2  # 2: shard sizes and sha256s in metadata.json
METADATA_FILE = "metadata.json"
TOKEN_COUNTS_FILE = "token_counts.npy"
SPLITS = ("train", "validation")
HASH_BLOCK_BYTES = 1 << 24  # bytes read at a time when hashing a shard
VERIFY_MODES = (True, False, "auto")
VERIFY_AUTO_BYTES = 512 << 20  # verify_shards="auto" hashes shards of at most this many bytes in all (512 MiB)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id 0..vocab_size-1 fits in 16 bits, else uint32."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size}; allowed: >= 1")
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size={vocab_size} does not fit uint32 ids (allowed: <= {2**32})")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def write_metadata(directory: Path, metadata: dict) -> None:
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(directory: str | Path) -> dict:
    """The metadata of a shard directory; errors say what is missing and how to create it."""
    return read_folder_metadata(
        directory, FORMAT, VERSION, f"shards_dir={str(directory)!r}", f"python -m distil.prepare output_dir={directory}"
    )


def read_folder_metadata(directory: str | Path, format_name: str, version: int, key: str, command: str) -> dict:
    """The `metadata.json` of a folder one of the project's writers made (shards, a teacher cache), of format
    `format_name` and `version`; a missing, unreadable or other file names the config `key` and the `command` that
    writes the folder."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{key} has no {METADATA_FILE}: write it with `{command}`")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is damaged ({error}): write it again with `{command}`") from error
    if metadata.get("format") != format_name or metadata.get("version") != version:
        raise ValueError(
            f"{path} is not a {format_name} v{version} folder (found {metadata.get('format')} "
            f"v{metadata.get('version')}): write it again with `{command}`"
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


def check_row_kind(metadata: dict, causal: bool, directory) -> None:
    """The shards' documents must be joined as the model's rows need: by [SEP] for a masked LM, by end-of-text for a
    causal one (`metadata["causal"]`, absent in shards of masked LMs written before causal LMs were supported)."""
    kinds = {True: "a causal LM (documents joined by end-of-text)", False: "a masked LM (documents joined by [SEP])"}
    written = bool(metadata.get("causal", False))
    if written != causal:
        raise ValueError(
            f"shards in {directory} were prepared for {kinds[written]}, and this run trains {kinds[causal]}; run "
            "`python -m distil.prepare` with this run's teacher"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def check_split_files(directory: str | Path, metadata: dict, split: str, verify: bool = False) -> None:
    """Every shard of `split` exists with the size `metadata.json` records (and, with `verify`, its sha256);
    raises naming the file otherwise."""
    entry = metadata["splits"][split]
    for name, size, sha256 in zip(entry["shards"], entry["shard_bytes"], entry["shard_sha256"]):
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in {METADATA_FILE} is missing; re-run distil.prepare")
        actual = path.stat().st_size
        if actual != size:
            raise ValueError(
                f"shard {path} has {actual} bytes but {METADATA_FILE} records {size}: it was truncated or changed "
                "after distil.prepare wrote it; re-run distil.prepare"
            )
        if verify and file_sha256(path) != sha256:
            raise ValueError(
                f"shard {path} does not match the sha256 that {METADATA_FILE} records: its bytes changed after "
                "distil.prepare wrote it; re-run distil.prepare"
            )


def verify_at_start(verify: bool | str, metadata: dict) -> bool:
    """Whether to compare every shard's sha256 with the metadata at start: `verify` True or False, or "auto" when
    the shards hold at most `VERIFY_AUTO_BYTES` in all (sha256 reads 1.5 GB/s on one core of the development
    machine: 0.36 s for 512 MiB, 3% of the 10.7 s the demo takes to its first step there; docs/reliability.md)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"data.verify_shards={verify!r} is not allowed: use true, false or auto")
    if verify != "auto":
        return bool(verify)
    total = sum(sum(metadata["splits"][split]["shard_bytes"]) for split in SPLITS)
    if total > VERIFY_AUTO_BYTES:
        log.info(
            "verify_shards=auto: the shards hold %d bytes (> 512 MiB), so only their sizes are compared at start; "
            "set data.verify_shards=true to also compare their sha256 (about 1 s per 1.5 GB)",
            total,
        )
        return False
    return True


def open_split(directory: str | Path, metadata: dict, split: str) -> list[np.ndarray]:
    """Read-only memory maps of a split's shards (empty shards are skipped), after checking their sizes."""
    check_split_files(directory, metadata, split)
    dtype = np.dtype(metadata["dtype"])
    paths = [Path(directory) / name for name in metadata["splits"][split]["shards"]]
    return [np.memmap(path, dtype=dtype, mode="r") for path in paths if path.stat().st_size]
