"""Where documents come from: local files by glob, or a Hugging Face hub dataset streamed.

A source is built by Hydra from `conf/data/*.yaml` (`_target_: distil.data.sources.LocalFiles` or `HubDataset`).
`documents()` restarts the source from its first document on every call; the data module interleaves several
sources by `weight`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from distil.data.documents import expand_paths, file_documents

log = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    """The source cannot be read here (files absent, hub unreachable); the message says what to set."""


class LocalFiles:
    """Documents from local `.txt`, `.jsonl`, `.parquet` files (optionally `.gz`), in sorted order per pattern.

    Empty files are skipped, counted and logged; a source whose files hold no document at all is an error.
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        text_field: str = "text",
        weight: float = 1.0,
        decode_errors: str = "strict",
        name: str | None = None,
    ) -> None:
        self.patterns = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.text_field = text_field
        self.weight = float(weight)
        self.decode_errors = decode_errors
        self.name = name or ",".join(self.patterns)
        if self.weight <= 0:
            raise ValueError(f"source {self.name}: weight={weight}; allowed: a number > 0")

    def check(self) -> None:
        try:
            expand_paths(self.patterns, config_key=f"source {self.name} paths")
        except FileNotFoundError as error:
            raise SourceUnavailable(str(error)) from error

    def documents(self) -> Iterator[str]:
        files = expand_paths(self.patterns, config_key=f"source {self.name} paths")
        empty_files: list[Path] = []
        total = 0
        for path in files:
            count = 0
            for document in file_documents(path, self.text_field, self.decode_errors):
                count += 1
                yield document
            if count == 0:
                empty_files.append(path)
            total += count
        if empty_files:
            log.warning("source %s: skipped %d empty file(s): %s", self.name, len(empty_files), empty_files[:5])
        if total == 0:
            raise ValueError(f"source {self.name}: the {len(files)} file(s) matched by {self.patterns} hold no document")


class HubDataset:
    """Documents streamed from a Hugging Face hub dataset (`datasets.load_dataset(..., streaming=True)`)."""

    def __init__(
        self,
        path: str,
        config_name: str | None = None,
        split: str = "train",
        text_field: str = "text",
        weight: float = 1.0,
        revision: str | None = None,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.config_name = config_name
        self.split = split
        self.text_field = text_field
        self.weight = float(weight)
        self.revision = revision
        self.name = name or (f"{path}/{config_name}" if config_name else path)
        if self.weight <= 0:
            raise ValueError(f"source {self.name}: weight={weight}; allowed: a number > 0")

    def load(self):
        import datasets

        try:
            return datasets.load_dataset(
                self.path, self.config_name, split=self.split, streaming=True, revision=self.revision
            )
        except Exception as error:  # the hub raises many types (connection, not found, gated)
            raise SourceUnavailable(
                f"source {self.name}: cannot stream hub dataset path={self.path!r} config_name={self.config_name!r} "
                f"split={self.split!r} ({type(error).__name__}: {error})"
            ) from error

    def check(self) -> None:
        dataset = self.load()
        features = getattr(dataset, "features", None)
        if features is not None and self.text_field not in features:
            raise KeyError(f"source {self.name}: no field text_field={self.text_field!r}; fields: {list(features)}")

    def documents(self) -> Iterator[str]:
        for record in self.load():
            if self.text_field not in record:
                raise KeyError(f"source {self.name}: no field text_field={self.text_field!r}; fields: {sorted(record)}")
            text = record[self.text_field]
            if text:
                yield text
