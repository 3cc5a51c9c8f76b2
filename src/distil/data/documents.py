"""Local text files -> documents (strings).

Formats, chosen by file name unless given: `text` (`.txt`: documents separated by one or more blank lines), `jsonl`
(`.jsonl`: one JSON object per line, the document in `text_field`), `parquet` (`.parquet`: the document in column
`text_field`); each may end in `.gz` (gzip) except parquet, which compresses internally. Two formats are only used
when named, since their files have no telling extension: `squad` (SQuAD's JSON, each paragraph's `context` a document)
and `conll` (CoNLL-2003 columns: the first column is the word, a blank line ends a sentence, `-DOCSTART-` starts a
document; a document's sentences are lines of words joined by spaces).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
ALLOWED_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
FORMATS = ("text", "jsonl", "parquet", "squad", "conll")  # `format` of a source; None = by file name
DECODE_ERROR_MODES = ("strict", "replace")
CONLL_DOCUMENT_START = "-DOCSTART-"


def check_format(format: str | None, config_key: str = "format") -> None:
    """Raise ValueError naming `config_key` when `format` is neither None (by file name) nor one of FORMATS."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"{config_key}={format!r}; allowed: null (by file name) or one of {list(FORMATS)}")


def format_of(path: Path, format: str | None) -> str:
    """`format` when given, else the format its file name says (checked by `expand_paths`)."""
    if format is not None:
        return format
    name = path.name
    return "parquet" if name.endswith(PARQUET_SUFFIXES) else "text" if name.endswith(TEXT_SUFFIXES) else "jsonl"


def expand_paths(patterns: str | Sequence[str], config_key: str = "paths", format: str | None = None) -> list[Path]:
    """Files matched by the glob patterns, sorted per pattern (a stable order); errors name what matched nothing.
    Without a `format`, every file must have a suffix that says one."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ValueError(f"{config_key} is empty: give at least one file path or glob pattern")
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not matched:
            raise FileNotFoundError(f"{config_key}: no file matches {pattern!r} (check the path, or set {config_key})")
        for path in matched:
            if format is None and not path.name.endswith(ALLOWED_SUFFIXES):
                allowed = ", ".join(ALLOWED_SUFFIXES)
                raise ValueError(
                    f"{config_key}: {path} has an unsupported type; allowed: {allowed}, or name the source's format "
                    f"(one of {list(FORMATS)})"
                )
        files.extend(matched)
    return files


def open_text(path: Path, decode_errors: str) -> io.TextIOBase:
    """Open a possibly gzipped file as UTF-8 text."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors=decode_errors)
    return open(path, encoding="utf-8", errors=decode_errors)


def text_file_documents(path: Path, decode_errors: str) -> Iterator[str]:
    """Blank-line-separated documents of a .txt file; the lines of a document are joined with newlines."""
    lines: list[str] = []
    with open_text(path, decode_errors) as file:
        for line in file:
            if line.strip():
                lines.append(line.strip())
            elif lines:
                yield "\n".join(lines)
                lines = []
    if lines:
        yield "\n".join(lines)


def jsonl_records(path: Path, decode_errors: str, expected: str = "") -> Iterator[tuple[str, dict]]:
    """(`<file>:<line>`, the JSON object) of each non-blank line; a line that is not valid JSON or not an object is a
    ValueError naming the file and line (and `expected`, what a line should hold)."""
    with open_text(path, decode_errors) as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} is not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object{expected}")
            yield where, record


def jsonl_file_documents(path: Path, text_field: str, decode_errors: str) -> Iterator[str]:
    """The `text_field` of each JSON line (`record_texts`); a line that is not a JSON object is an error naming the
    file and line."""
    yield from record_texts(jsonl_records(path, decode_errors), text_field, str(path))


def record_texts(records: Iterable[tuple[str, dict]], text_field: str, source: str) -> Iterator[str]:
    """The `text_field` of each (where it is, record) pair. A missing field is an error naming the fields that exist,
    a value that is neither a string nor null (a number, a list) an error naming where the record is; a null is
    skipped, counted and logged under `source` once the records end."""
    nulls = 0
    for where, record in records:
        if text_field not in record:
            raise KeyError(f"{where} has no field text_field={text_field!r}; fields: {sorted(record)}")
        text = record[text_field]
        if text is None:
            nulls += 1
        elif isinstance(text, str):
            yield text
        else:
            raise ValueError(
                f"{where}: text_field={text_field!r} holds a {type(text).__name__}, not a string; fix the record "
                "(a null is skipped)"
            )
    log_skipped_nulls(source, nulls, text_field)


def log_skipped_nulls(source: str, count: int, text_field: str) -> None:
    if count:
        log.warning("%s: skipped %d records whose text_field=%r is null", source, count, text_field)


SQUAD_LAYOUT = 'SQuAD\'s {"data": [{"paragraphs": [{"context": "...", "qas": [...]}]}]}'


def squad_paragraphs(path: Path, decode_errors: str = "strict") -> Iterator[tuple[str, dict]]:
    """Every paragraph object of a SQuAD JSON file (`data[].paragraphs[]`, each with a text `context`), in file
    order, with where it is (`<path>: data[i].paragraphs[j]`); the question-answering task reads its `qas`."""
    with open_text(path, decode_errors) as file:
        try:
            dataset = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); expected {SQUAD_LAYOUT}") from error
    articles = dataset.get("data") if isinstance(dataset, dict) else None
    if not isinstance(articles, list):
        raise ValueError(f"{path} has no top-level list 'data'; expected {SQUAD_LAYOUT}")
    for i, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise ValueError(f"{path}: data[{i}] has no list 'paragraphs'; expected {SQUAD_LAYOUT}")
        for j, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise ValueError(f"{where} has no text 'context'; expected {SQUAD_LAYOUT}")
            yield where, paragraph


@dataclass(frozen=True)
class ConllSentence:
    """One sentence of a CoNLL column file: each word's columns (the word first), the line number of its first word,
    and whether a `-DOCSTART-` line came between the previous sentence and this one (a new document starts)."""

    rows: list[list[str]]
    first_line: int
    starts_document: bool


def conll_sentences(lines: Iterable[str]) -> Iterator[ConllSentence]:
    """The sentences of the lines of a CoNLL column file: consecutive non-blank lines other than `-DOCSTART-`."""
    rows: list[list[str]] = []
    first_line, document_start = 0, False
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if columns and columns[0] != CONLL_DOCUMENT_START:
            rows.append(columns)
            first_line = first_line or number
            continue
        if rows:
            yield ConllSentence(rows, first_line, document_start)
            rows, first_line, document_start = [], 0, False
        document_start = document_start or bool(columns)
    if rows:
        yield ConllSentence(rows, first_line, document_start)


def conll_file_documents(path: Path, decode_errors: str) -> Iterator[str]:
    """The documents of a CoNLL-2003 column file: the first column's words, a sentence per line."""
    sentences: list[str] = []
    with open_text(path, decode_errors) as file:
        for sentence in conll_sentences(file):
            if sentence.starts_document and sentences:  # the document so far is complete
                yield "\n".join(sentences)
                sentences = []
            sentences.append(" ".join(row[0] for row in sentence.rows))
    if sentences:
        yield "\n".join(sentences)


def parquet_file_documents(path: Path, text_field: str) -> Iterator[str]:
    """Column `text_field` of a parquet file, read one row group at a time."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    if text_field not in columns:
        raise KeyError(f"{path} has no column text_field={text_field!r}; columns: {columns}")
    nulls = 0
    for group in range(parquet.num_row_groups):
        for text in parquet.read_row_group(group, columns=[text_field]).column(0).to_pylist():
            if text is None:
                nulls += 1
            else:
                yield text
    log_skipped_nulls(str(path), nulls, text_field)


def file_documents(
    path: Path, text_field: str = "text", decode_errors: str = "strict", format: str | None = None
) -> Iterator[str]:
    """Documents of one file, in `format` (None: by its file name). Undecodable bytes raise an error naming the file
    unless decode_errors="replace", which substitutes U+FFFD and logs how many were replaced."""
    if decode_errors not in DECODE_ERROR_MODES:
        raise ValueError(f"decode_errors={decode_errors!r}; allowed: {DECODE_ERROR_MODES}")
    check_format(format)
    kind = format_of(path, format)
    if kind == "parquet":
        yield from parquet_file_documents(path, text_field)
        return
    readers = {
        "text": lambda: text_file_documents(path, decode_errors),
        "jsonl": lambda: jsonl_file_documents(path, text_field, decode_errors),
        "squad": lambda: (paragraph["context"] for _, paragraph in squad_paragraphs(path, decode_errors)),
        "conll": lambda: conll_file_documents(path, decode_errors),
    }
    documents = readers[kind]()
    replaced = 0
    try:
        for document in documents:
            if decode_errors == "replace":
                replaced += document.count("\ufffd")
            yield document
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: bytes {error.object[error.start : error.end]!r} are not valid UTF-8 ({error.reason}); "
            f"fix the file or set decode_errors=replace"
        ) from error
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path} is truncated or not a gzip file ({type(error).__name__}: {error})") from error
    if replaced:
        log.warning("%s: replaced %d undecodable bytes with U+FFFD (decode_errors=replace)", path, replaced)
