"""What every task kind says: where its examples come from, how they become features, its head, its soft-target loss
and its official metrics. `conf/task/*.yaml` instantiates one kind (`_target_`) with typed arguments.

A task reads its train and dev examples from a local directory (`source` a folder holding `train_file` and
`dev_file`) or from the Hugging Face hub (`source` a dataset id, with `hub_config` and the splits). Bad input is an
error naming the file, line and value, or, where the issue is one example (an answer not in its context), a counted
and logged skip; both happen while the examples are read, before any model is loaded.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.value_checks import check_integer

LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")  # a source starting so names a local folder, never a hub id


@dataclass
class Encoded:
    """The features of one split and what scoring them needs.

    Attributes:
        features: one dict per feature: the model inputs (`input_ids`, `attention_mask`, `token_type_ids` where the
            model takes them) and, for training, the targets the model's own loss reads (`labels`, or
            `start_positions` / `end_positions`).
        scoring: what the task's `score` needs besides the model's outputs (gold labels, word alignment, answers).
    """

    features: list[dict[str, Any]]
    scoring: Any


class Task(ABC):
    """A fine-tuning task of one kind (subclasses: sequence classification, token classification, extractive QA).

    Args:
        name: the task's name (run directories, reports, cache files).
        source: a local folder holding `train_file` and `dev_file`, or a hub dataset id.
        train_file, dev_file: the file names inside a local `source`.
        hub_config: the hub dataset's configuration (GLUE's task name), or None.
        train_split, dev_split: the hub splits used for training and scoring.
        metrics: the names of the metrics reported on the dev split, the first one the main one.
        max_length: tokens per feature after truncation (batches are padded to their longest feature).
    """

    model_class: type  # the transformers Auto class that puts this kind's head on an encoder
    outputs: tuple[str, ...]  # the model outputs the soft-target loss and the metrics read (e.g. "logits")
    per_token: frozenset[str] = frozenset()  # targets and outputs with one value per token (padded in batches)

    def __init__(
        self,
        name: str,
        source: str,
        train_file: str,
        dev_file: str,
        hub_config: str | None,
        train_split: str,
        dev_split: str,
        metrics: list[str],
        max_length: int,
    ) -> None:
        self.name = name
        self.source = str(source)
        self.files = {"train": train_file, "dev": dev_file}
        self.hub_config = hub_config
        self.hub_splits = {"train": train_split, "dev": dev_split}
        self.metrics = list(metrics)
        check_integer("task.max_length", max_length, 8)
        self.max_length = max_length

    @property
    def is_local(self) -> bool:
        return Path(self.source).expanduser().is_dir()

    def local_file(self, split: str) -> Path:
        return Path(self.source).expanduser() / self.files[split]

    def check_source(self) -> None:
        """Raise before any download or training when a local source lacks its files or does not exist."""
        path = Path(self.source).expanduser()
        if path.is_dir():
            missing = [name for name in self.files.values() if not (path / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"task.source={self.source!r} (task {self.name}) lacks {missing}; it needs "
                    f"{list(self.files.values())} (task.train_file, task.dev_file)"
                )
        elif path.exists() or self.source.startswith(LOCAL_PATH_PREFIXES):
            raise FileNotFoundError(
                f"task.source={self.source!r} (task {self.name}) is not a directory: give a folder with "
                f"{list(self.files.values())}, or a hub dataset id"
            )

    def examples(self, split: str) -> list:
        """The checked examples of `split` ("train" or "dev"), from the local file or the hub."""
        if self.is_local:
            return self.read_file(self.local_file(split))
        from datasets import load_dataset

        rows = load_dataset(self.source, self.hub_config, split=self.hub_splits[split])
        return self.from_hub(rows, f"{self.source} {self.hub_splits[split]}")

    def data_identity(self, split: str) -> str:
        """What the examples of `split` are read from: the sha256 of the local file, or the hub dataset and split."""
        if self.is_local:
            return "sha256:" + hashlib.sha256(self.local_file(split).read_bytes()).hexdigest()
        return f"hub:{self.source}/{self.hub_config}/{self.hub_splits[split]}"

    @abstractmethod
    def read_file(self, path: Path) -> list:
        """The checked examples of a local file."""

    @abstractmethod
    def from_hub(self, rows, where: str) -> list:
        """The checked examples of a hub dataset split (`where` names it in errors)."""

    @abstractmethod
    def head_config(self) -> dict[str, Any]:
        """The config fields of the task head (`num_labels`, `id2label`, ...), given to `from_pretrained`."""

    @abstractmethod
    def encode(self, examples: list, tokenizer, training: bool) -> Encoded:
        """Tokenized features (unpadded; every input the tokenizer gives), with targets when `training`."""

    @abstractmethod
    def soft_loss(self, student, teacher: dict[str, torch.Tensor], batch: dict, temperature: float) -> torch.Tensor:
        """The soft-target loss of the student's model output against the teacher's `outputs` for this batch."""

    @abstractmethod
    def score(self, dev: Encoded, outputs: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """The task's metrics (`self.metrics`) from the model's `outputs` on each dev feature (unpadded)."""

    def describe(self) -> str:
        return f"{self.name} ({type(self).__name__}, metrics {', '.join(self.metrics)})"
