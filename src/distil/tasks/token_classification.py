"""Token classification (NER, CoNLL-2003): a tag for every word of a sentence, scored by entities.

Local files are in the CoNLL column format: one `word ... tag` line per word (the word first, the tag last; CoNLL-2003
has `word POS chunk NER`), a blank line after each sentence, `-DOCSTART-` lines between documents. Tags are read as
IOB1 (CoNLL-2003's original scheme: `I-` inside an entity, `B-` only where two entities of one type touch) and turned
into IOB2 (`B-` at every entity's first word), which gives the same entities, matches the hub's copy of the data and
gives the model one tag for "an entity starts here". Each word's tag is the label of its first sub-token; the other
sub-tokens, the special tokens and the padding are labelled -100 (no loss, no score). Words cut off by `max_length`
are predicted `O` when scored (and counted in the log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForTokenClassification

from distil.data.documents import conll_sentences
from distil.modules.losses import IGNORE_INDEX
from distil.tasks.metrics import ENTITY_METRICS, check_metric_names, entity_scores
from distil.tasks.soft_targets import token_soft_loss
from distil.tasks.task import Encoded, Task

log = logging.getLogger(__name__)

OUTSIDE = "O"  # the tag of a word outside every entity


@dataclass(frozen=True)
class Sentence:
    """The words of one sentence and the id of each word's tag."""

    words: tuple[str, ...]
    tags: tuple[int, ...]


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """The same entities in IOB2: an `I-X` that starts an entity (after `O` or after another type) becomes `B-X`.
    IOB2 tags are returned unchanged."""
    converted, previous = [], OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and (previous == OUTSIDE or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


class TokenClassificationTask(Task):
    """Named-entity recognition: a tag per word, entity-level precision, recall and F1 (seqeval).

    Args (besides `Task`'s):
        label_names: the tags in id order (IOB2; the hub dataset's order), e.g. [O, B-PER, I-PER, ...].
        words_field, tags_field: the hub dataset's columns of the words and of the tag ids.
    """

    model_class = AutoModelForTokenClassification
    outputs = ("logits",)
    per_token = frozenset({"labels", "logits"})

    def __init__(self, label_names: list[str], words_field: str, tags_field: str, **task: Any) -> None:
        super().__init__(**task)
        self.label_names = list(label_names)
        self.words_field = words_field
        self.tags_field = tags_field
        self.metrics = check_metric_names(self.metrics, ENTITY_METRICS, self.name)

    def head_config(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
        }

    def sentence(self, words: list[str], tags: list[str], where: str) -> Sentence:
        """A sentence with tag ids; raises naming `where` and the tag when one is not among `label_names`."""
        ids = []
        for word, tag in zip(words, iob1_to_iob2(tags)):
            if tag not in self.label_names:
                raise ValueError(
                    f"{where}: the word {word!r} has tag {tag!r}; allowed: {self.label_names} (task.label_names)"
                )
            ids.append(self.label_names.index(tag))
        return Sentence(tuple(words), tuple(ids))

    def read_file(self, path: Path) -> list[Sentence]:
        sentences = []
        with path.open(encoding="utf-8") as f:
            for sentence in conll_sentences(f):
                for offset, cells in enumerate(sentence.rows):  # a sentence's lines are consecutive
                    if len(cells) < 2:
                        line = sentence.first_line + offset
                        raise ValueError(f"{path}, line {line}: {' '.join(cells)!r} has no tag column (word ... tag)")
                words, tags = [cells[0] for cells in sentence.rows], [cells[-1] for cells in sentence.rows]
                sentences.append(self.sentence(words, tags, f"{path}, sentence at line {sentence.first_line}"))
        if not sentences:
            raise ValueError(f"{path} has no sentences (CoNLL column format: one `word ... tag` line per word)")
        return sentences

    def from_hub(self, rows, where: str) -> list[Sentence]:
        feature = rows.features[self.tags_field]
        names = getattr(getattr(feature, "feature", None), "names", None) or self.label_names
        return [
            self.sentence(row[self.words_field], [names[tag] for tag in row[self.tags_field]], f"{where}, row {i}")
            for i, row in enumerate(rows)
        ]

    def encode(self, examples: list[Sentence], tokenizer, training: bool) -> Encoded:
        tokens = tokenizer(
            [list(s.words) for s in examples], is_split_into_words=True, truncation=True, max_length=self.max_length
        )
        features, first_tokens, lost = [], [], 0
        for i, sentence in enumerate(examples):
            feature = {k: tokens[k][i] for k in tokens}
            word_ids = tokens.word_ids(i)
            first = [-1] * len(sentence.words)  # the position of each word's first sub-token; -1: cut off
            for position, word in enumerate(word_ids):
                if word is not None and first[word] < 0:
                    first[word] = position
            lost += first.count(-1)
            if training:
                labels = [IGNORE_INDEX] * len(word_ids)
                for word, position in enumerate(first):
                    if position >= 0:
                        labels[position] = sentence.tags[word]
                feature["labels"] = labels
            features.append(feature)
            first_tokens.append(first)
        if lost:
            log.info(
                "%s: %d words beyond max_length=%d tokens (no label; scored as %s)",
                self.name,
                lost,
                self.max_length,
                OUTSIDE,
            )
        gold = [[self.label_names[t] for t in s.tags] for s in examples]
        return Encoded(features, (first_tokens, gold))

    def soft_loss(self, student, teacher: dict[str, torch.Tensor], batch: dict, temperature: float) -> torch.Tensor:
        return token_soft_loss(student.logits, teacher["logits"], batch["labels"], temperature)

    def score(self, dev: Encoded, outputs: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        first_tokens, gold = dev.scoring
        predicted = []
        for logits, first in zip(outputs["logits"], first_tokens):
            best = logits.argmax(dim=-1).tolist()
            predicted.append([self.label_names[best[p]] if p >= 0 else OUTSIDE for p in first])
        scores = entity_scores(gold, predicted)
        return {name: scores[name] for name in self.metrics}
