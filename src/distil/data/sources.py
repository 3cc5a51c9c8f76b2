"""Where documents come from: local files by glob, or a Hugging Face hub dataset streamed.

A source is built by Hydra from `conf/data/*.yaml` (`_target_: distil.data.sources.LocalFiles` or `HubDataset`).
`documents()` restarts the source from its first document on every call; the data module interleaves several
sources by `weight`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from distil.data.documents import check_format, expand_paths, file_documents, record_texts

log = logging.getLogger(__name__)


PRESCAN_MODES = (True, False, "auto")
PRESCAN_AUTO_BYTES = 1 << 30  # prescan="auto" reads local files of at most this many bytes in all (1 GiB: about 3 s of
# .jsonl at 350 MB/s, 0.7 s of .txt at 1.5 GB/s on the development machine; docs/reliability.md)


class SourceUnavailable(RuntimeError):
    """The source cannot be read here (files absent, hub unreachable); the message says what to set."""


def describe_sources(sources: list) -> str:
    """Source names, with the file patterns of local ones, for the log."""
    return ", ".join(
        f"{source.name} ({', '.join(source.patterns)})" if hasattr(source, "patterns") else source.name
        for source in sources
    )


def resolve_sources(sources: list, fallback_sources: list, fallback_when_missing: str | None = None) -> list:
    """`sources` when all are readable; else `fallback_sources`, but only when the folder `fallback_when_missing`
    does not exist (e.g. the shared assets of the demo: a mistyped path beside them is an error, not a silent switch
    to another corpus). Logs which corpus is in use; errors name the failures and what to set."""
    if fallback_sources and fallback_when_missing is None:
        raise ValueError(
            "data.fallback_sources are given without data.fallback_when_missing: name the folder whose absence "
            "allows the fallback (e.g. ${paths.shared_dir})"
        )
    try:
        for source in sources:
            source.check()
        log.info("corpus: data.sources: %s", describe_sources(sources))
        return sources
    except SourceUnavailable as primary_error:
        if not fallback_sources:
            raise SourceUnavailable(f"data.sources: {primary_error}") from primary_error
        if Path(fallback_when_missing).exists():
            raise SourceUnavailable(
                f"data.sources: {primary_error}. data.fallback_sources are used only when {fallback_when_missing} "
                "(data.fallback_when_missing) does not exist, and it exists: fix the path"
            ) from primary_error
        try:
            for source in fallback_sources:
                source.check()
        except SourceUnavailable as fallback_error:
            raise SourceUnavailable(
                f"no readable corpus. data.sources: {primary_error}. data.fallback_sources: {fallback_error}. "
                "Set data.sources[i].paths to your text files (or paths.shared_dir / $DISTIL_SHARED to the folder "
                "holding data/corpus), or make the Hugging Face hub reachable"
            ) from fallback_error
        log.warning(
            "%s does not exist: corpus: data.fallback_sources: %s",
            fallback_when_missing,
            describe_sources(fallback_sources),
        )
        return fallback_sources


def prescan_sources(sources: list, prescan: bool | str) -> None:
    """Read every document of `sources` once, before training, so that a record that cannot be read (invalid JSON,
    bytes that are not UTF-8, a text that is not a string, a truncated .gz) fails now, naming its file and line,
    instead of at some step of the run. `prescan`: True, False, or "auto": only when every source is local files
    and together they hold at most `PRESCAN_AUTO_BYTES` (a hub stream is read as it comes)."""
    if prescan not in PRESCAN_MODES:
        raise ValueError(f"data.prescan={prescan!r} is not allowed: use true, false or auto")
    if prescan is False or not sources:
        return
    local = all(isinstance(source, LocalFiles) for source in sources)
    total = sum(source.bytes_on_disk() for source in sources) if local else None
    if prescan == "auto" and (total is None or total > PRESCAN_AUTO_BYTES):
        log.info(
            "data.prescan=auto: not reading the corpus ahead (%s); a record that cannot be read stops the run when "
            "it is reached (set data.prescan=true to read everything first)",
            "a source is not local files" if total is None else f"{total / 2**30:.1f} GiB > 1 GiB",
        )
        return
    started = time.perf_counter()
    documents = sum(1 for source in sources for _ in source.documents())
    log.info(
        "data.prescan: read all %d documents of %s in %.2f s",
        documents,
        describe_sources(sources),
        time.perf_counter() - started,
    )


class LocalFiles:
    """Documents from local `.txt`, `.jsonl`, `.parquet` files (optionally `.gz`), in sorted order per pattern; or,
    with `format="squad"` / `"conll"`, SQuAD JSON paragraphs / CoNLL-2003 documents (`distil.data.documents`).

    Empty files are skipped, counted and logged; a source whose files hold no document at all is an error.
    `unknown_marker` is the string this text writes for a word it dropped, such as WikiText's `<unk>`: the corpus
    turns it into the tokenizer's own unknown token (`[UNK]` for BERT, `<unk>` for RoBERTa; a special token, never
    masked or scored) instead of maskable word pieces.
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        text_field: str = "text",
        weight: float = 1.0,
        decode_errors: str = "strict",
        name: str | None = None,
        unknown_marker: str | None = None,
        format: str | None = None,
    ) -> None:
        self.patterns = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.text_field = text_field
        self.weight = float(weight)
        self.decode_errors = decode_errors
        self.name = name or ",".join(self.patterns)
        self.unknown_marker = unknown_marker
        self.format = format
        if self.weight <= 0:
            raise ValueError(f"source {self.name}: weight={weight}; allowed: a number > 0")
        check_format(format, config_key=f"source {self.name} format")

    def check(self) -> None:
        try:
            expand_paths(self.patterns, config_key=f"source {self.name} paths", format=self.format)
        except FileNotFoundError as error:
            raise SourceUnavailable(str(error)) from error

    def bytes_on_disk(self) -> int:
        return sum(
            path.stat().st_size for path in expand_paths(self.patterns, f"source {self.name} paths", self.format)
        )

    def documents(self) -> Iterator[str]:
        files = expand_paths(self.patterns, config_key=f"source {self.name} paths", format=self.format)
        empty_files: list[Path] = []
        total = 0
        for path in files:
            count = 0
            for document in file_documents(path, self.text_field, self.decode_errors, self.format):
                count += 1
                yield document
            if count == 0:
                empty_files.append(path)
            total += count
        if empty_files:
            log.warning("source %s: skipped %d empty file(s): %s", self.name, len(empty_files), empty_files[:5])
        if total == 0:
            raise ValueError(f"source {self.name}: the {len(files)} file(s) matched by {self.patterns} hold no text")


class HubDataset:
    """Documents streamed from a Hugging Face hub dataset (`datasets.load_dataset(..., streaming=True)`).

    `records_per_document` > 1 joins that many consecutive records into one document (BookCorpus stores one
    sentence per record; joining keeps [SEP] at real document-like borders instead of after every sentence).
    `unknown_marker`: as for `LocalFiles` (e.g. `<unk>` in the non-raw WikiText configurations).
    """

    def __init__(
        self,
        path: str,
        config_name: str | None = None,
        split: str = "train",
        text_field: str = "text",
        weight: float = 1.0,
        revision: str | None = None,
        data_files: str | list[str] | None = None,
        records_per_document: int = 1,
        name: str | None = None,
        unknown_marker: str | None = None,
    ) -> None:
        if records_per_document < 1:
            raise ValueError(f"records_per_document={records_per_document}; allowed: an integer >= 1")
        self.records_per_document = records_per_document
        self.data_files = data_files if data_files is None or isinstance(data_files, str) else list(data_files)
        self.path = path
        self.config_name = config_name
        self.split = split
        self.text_field = text_field
        self.weight = float(weight)
        self.revision = revision
        self.name = name or (f"{path}/{config_name}" if config_name else path)
        self.unknown_marker = unknown_marker
        if self.weight <= 0:
            raise ValueError(f"source {self.name}: weight={weight}; allowed: a number > 0")

    def load(self):
        import datasets

        try:
            return datasets.load_dataset(
                self.path,
                self.config_name,
                split=self.split,
                streaming=True,
                revision=self.revision,
                data_files=self.data_files,
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

    def texts(self) -> Iterator[str]:
        """The text of each record (`distil.data.documents.record_texts`: a null is skipped and counted, another value
        that is not a string is an error naming the record)."""
        records = ((f"source {self.name}: record {index}", record) for index, record in enumerate(self.load()))
        yield from record_texts(records, self.text_field, f"source {self.name}")

    def documents(self) -> Iterator[str]:
        texts = self.texts()
        if self.records_per_document == 1:
            yield from texts
            return
        while group := list(itertools.islice(texts, self.records_per_document)):
            yield "\n".join(group)
