"""Sequence classification and regression (GLUE): one text or a text pair -> a class, or a score (`num_labels: 1`).

A local task folder holds TSV files, read with quoting off (GLUE's sentences contain unbalanced `"` characters) and
an optional UTF-8 byte-order mark (MRPC's files start with one). The first row names the columns, unless the task
gives `header` (CoLA's files have no header row). `columns` maps the hub's column names, which the task's fields use,
to a local file's own (MRPC's `#1 String`, STS-B's `score`). A class label is an integer id or, with `label_names`, a
class name (RTE's `entailment`); a regression label is a number.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from distil.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, check_metric_names
from distil.tasks.soft_targets import class_soft_loss, regression_soft_loss
from distil.tasks.task import Encoded, Task


@dataclass(frozen=True)
class Example:
    """One text (single-sentence tasks) or two (sentence-pair tasks), and its class id or score."""

    texts: tuple[str, ...]
    label: int | float


class SequenceClassificationTask(Task):
    """GLUE-style classification (`num_labels` >= 2: cross-entropy, KL soft targets) or regression (`num_labels` 1:
    squared error, squared error to the teacher's prediction).

    Args (besides `Task`'s):
        text_fields: the column(s) given to the tokenizer (one: single sentence, two: sentence pair).
        label_field: the label column.
        num_labels: the number of classes; 1 for regression.
        label_names: the class names in id order (the model config's `id2label`; word labels of local files), or None.
        columns: a local file's column name of each field whose name differs from the hub's, or None.
        header: the column names of local files without a header row, or None (the first row names them).
    """

    model_class = AutoModelForSequenceClassification
    outputs = ("logits",)

    def __init__(
        self,
        text_fields: list[str],
        label_field: str,
        num_labels: int,
        label_names: list[str] | None = None,
        columns: dict[str, str] | None = None,
        header: list[str] | None = None,
        **task: Any,
    ) -> None:
        super().__init__(**task)
        if not 1 <= len(text_fields) <= 2:
            raise ValueError(f"task {self.name}: text_fields={list(text_fields)} must name one or two columns")
        if num_labels < 1 or (label_names is not None and len(label_names) != num_labels):
            raise ValueError(f"task {self.name}: num_labels={num_labels} with label_names={label_names}")
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names is not None else None
        self.columns = dict(columns or {})
        self.header = list(header) if header is not None else None
        self.regression = num_labels == 1
        allowed = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        self.metrics = check_metric_names(self.metrics, list(allowed), self.name)

    def head_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "num_labels": self.num_labels,
            "problem_type": "regression" if self.regression else "single_label_classification",
        }
        if self.label_names:
            config["id2label"] = dict(enumerate(self.label_names))
            config["label2id"] = {name: i for i, name in enumerate(self.label_names)}
        return config

    def label(self, value: Any, where: str) -> int | float:
        """The class id (or score) of a label value; raises naming `where`, the value and what is allowed."""
        if self.regression:
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = float("nan")
            if not np.isfinite(score):
                raise ValueError(f"{where}: column {self.label_field!r} holds {value!r}; allowed: a number (score)")
            return score
        if self.label_names and value in self.label_names:
            return self.label_names.index(value)
        try:
            class_id = int(value)
        except (TypeError, ValueError):
            class_id = -1
        if not 0 <= class_id < self.num_labels or str(value).strip() != str(class_id):
            names = f" or a name of {self.label_names}" if self.label_names else ""
            raise ValueError(
                f"{where}: column {self.label_field!r} holds {value!r}; allowed: a class id 0..{self.num_labels - 1} "
                f"(task.num_labels){names}"
            )
        return class_id

    def read_file(self, path: Path) -> list[Example]:
        fields = [*self.text_fields, self.label_field]
        wanted = [self.columns.get(field, field) for field in fields]
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            names = self.header or next(reader, [])
            missing = [column for column in wanted if column not in names]
            if missing:
                raise ValueError(f"{path} has columns {names}; the task needs {missing} too")
            index = [names.index(column) for column in wanted]
            examples = []
            for row in reader:
                if len(row) != len(names):
                    raise ValueError(
                        f"{path}, line {reader.line_num}: {len(row)} tab-separated cells, expected {len(names)} "
                        f"({names})"
                    )
                *texts, label = (row[i] for i in index)
                examples.append(Example(tuple(texts), self.label(label, f"{path}, line {reader.line_num}")))
        if not examples:
            raise ValueError(f"{path} has no rows: the task needs examples in it")
        return examples

    def from_hub(self, rows, where: str) -> list[Example]:
        return [
            Example(tuple(row[c] for c in self.text_fields), self.label(row[self.label_field], f"{where}, row {i}"))
            for i, row in enumerate(rows)
        ]

    def encode(self, examples: list[Example], tokenizer, training: bool) -> Encoded:
        columns = list(zip(*(e.texts for e in examples)))
        tokens = tokenizer(*columns, truncation=True, max_length=self.max_length)
        features = [{k: tokens[k][i] for k in tokens} for i in range(len(examples))]
        if training:
            for feature, example in zip(features, examples):
                feature["labels"] = example.label
        return Encoded(features, np.array([e.label for e in examples]))

    def soft_loss(self, student, teacher: dict[str, torch.Tensor], batch: dict, temperature: float) -> torch.Tensor:
        if self.regression:
            return regression_soft_loss(student.logits, teacher["logits"])
        return class_soft_loss(student.logits, teacher["logits"], temperature)

    def score(self, dev: Encoded, outputs: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        logits = torch.stack(outputs["logits"]).float()
        predicted = logits[:, 0].numpy() if self.regression else logits.argmax(dim=-1).numpy()
        functions = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        return {name: functions[name](predicted, dev.scoring) for name in self.metrics}
