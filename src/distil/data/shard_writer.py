"""Writes a token stream into fixed-size binary shards of one split (see `distil.data.shards`), recording each
shard's size and sha256 as it goes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from distil.data.shards import shard_name


class ShardWriter:
    """Appends token arrays to `<split>-NNNNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens={shard_tokens}; allowed: an integer >= 1")
        self.directory = directory
        self.split = split
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[str] = []
        self.digests: list = []  # a running sha256 per shard
        self.tokens = 0
        self.documents = 0
        self.file = None
        self.in_current = 0

    def next_file(self) -> None:
        if self.file is not None:
            self.file.close()
        self.shards.append(shard_name(self.split, len(self.shards)))
        self.digests.append(hashlib.sha256())
        self.file = open(self.directory / self.shards[-1], "wb")
        self.in_current = 0

    def write(self, tokens: np.ndarray, documents: int) -> None:
        """Append tokens (already in this writer's dtype), splitting them across shard files when one fills up."""
        if tokens.dtype != self.dtype:
            raise TypeError(f"tokens have dtype {tokens.dtype}, shards use {self.dtype}")
        position = 0
        while position < len(tokens):
            if self.file is None or self.in_current == self.shard_tokens:
                self.next_file()
            take = min(len(tokens) - position, self.shard_tokens - self.in_current)
            piece = np.ascontiguousarray(tokens[position : position + take])
            self.digests[-1].update(piece.data)
            piece.tofile(self.file)
            self.in_current += take
            position += take
        self.tokens += len(tokens)
        self.documents += documents

    def close(self) -> dict:
        """Closes the open shard; returns this split's metadata entry (shard names, sizes in bytes and sha256s)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        return {
            "shards": self.shards,
            "shard_bytes": [(self.directory / name).stat().st_size for name in self.shards],
            "shard_sha256": [digest.hexdigest() for digest in self.digests],
            "tokens": self.tokens,
            "documents": self.documents,
        }
