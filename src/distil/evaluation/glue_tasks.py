"""GLUE classification examples: the train and dev splits of a task, from the hub `glue` dataset or local TSV files.

A local task directory holds `train.tsv` and `dev.tsv`, tab-separated with a header row naming the columns (as the
GLUE SST-2 files do: `sentence<TAB>label`). Quotes are plain characters in these files, not CSV quoting.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

LOCAL_SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv"}


@dataclass(frozen=True)
class Example:
    """One classification example: one text (single-sentence tasks) or two (sentence-pair tasks), and its class."""

    texts: tuple[str, ...]
    label: int


def is_local(source: str) -> bool:
    """True when `source` names a directory on disk rather than a hub dataset id."""
    return Path(source).expanduser().is_dir()


def check_task_source(source: str, name: str) -> None:
    """Raise before any download or training when a local-looking source lacks its TSV files."""
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [f for f in LOCAL_SPLIT_FILES.values() if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"task.source={source!r} (task {name}) lacks {missing}; it needs train.tsv and dev.tsv"
            )
    elif path.exists() or source.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(
            f"task.source={source!r} (task {name}) is not a directory: give a folder with train.tsv and dev.tsv, "
            "or a hub dataset id such as glue"
        )


def class_id(value: str, path: Path, line: int, label_field: str) -> int:
    """The integer class of a label cell; raises naming the file, the line, the column and the value."""
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path}, line {line}: column {label_field!r} holds {value!r}; allowed: an integer class id "
            "(0, 1, ... below task.num_labels), as in GLUE's files: map word labels to ids first"
        ) from error


def read_tsv(path: Path, text_fields: list[str], label_field: str) -> list[Example]:
    """Examples from a TSV file with a header; raises naming the file when columns or rows are missing or a label
    is not an integer."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in [*text_fields, label_field] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has columns {reader.fieldnames}; the task needs {missing} too")
        examples = [
            Example(tuple(row[c] for c in text_fields), class_id(row[label_field], path, reader.line_num, label_field))
            for row in reader
        ]
    if not examples:
        raise ValueError(f"{path} has a header but no rows: the task needs examples in it")
    return examples


def load_examples(
    source: str, name: str, split: str, hub_split: str, text_fields: list[str], label_field: str
) -> list[Example]:
    """The examples of one split.

    Args:
        source: a local task directory, or a hub dataset id (e.g. "glue") with the task `name` as its config.
        split: "train" or "dev" (which local file to read).
        hub_split: the hub split name of that split (e.g. "validation" for GLUE dev).
    """
    if is_local(source):
        return read_tsv(Path(source).expanduser() / LOCAL_SPLIT_FILES[split], text_fields, label_field)
    from datasets import load_dataset

    rows = load_dataset(source, name, split=hub_split)
    return [Example(tuple(row[c] for c in text_fields), int(row[label_field])) for row in rows]
