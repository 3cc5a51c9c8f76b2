"""Extractive question answering (SQuAD v1.1; v2.0 with unanswerable questions): the answer is a span of the context.

A question and its context make one feature per window: contexts longer than `max_length` are cut into windows that
overlap by `stride` tokens (the question is repeated in each). A training window is labelled with the token span of
the first gold answer, or with the first token ([CLS], "no answer here") when the answer is not wholly inside it. A
dev question's answer is the best-scoring span (start logit + end logit, at most `max_answer_tokens` tokens, inside
the context, start before end, among the `best_spans` highest start and end logits of each window) over all its
windows; with `with_no_answer` (SQuAD 2.0) the empty answer wins when the smallest [CLS] score of its windows beats
the best span. Exact match and F1 follow the official evaluation script (`metrics.squad_scores`).

Local files are SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers":
[{"text", "answer_start"}]}]}]}]}`). Training questions whose answer text is not at its `answer_start` in the context,
or that have no answer (v1.1), are skipped, counted and logged before training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering

from distil.data.documents import squad_paragraphs
from distil.tasks.metrics import SQUAD_METRICS, check_metric_names, squad_scores
from distil.tasks.soft_targets import span_soft_loss
from distil.tasks.task import Encoded, Task

log = logging.getLogger(__name__)

CONTEXT = 1  # the sequence id of the context tokens (the question is sequence 0)


@dataclass(frozen=True)
class Question:
    """A question about a context and its gold answers (texts and their character offsets in the context)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    starts: tuple[int, ...]


def answer_span(question: Question, sequence_ids: list, offsets: list, cls_index: int) -> tuple[int, int]:
    """The (first, last) token of the first gold answer in a window, or (cls, cls) when it is not wholly inside it."""
    if not question.answers:
        return cls_index, cls_index
    start_char = question.starts[0]
    end_char = start_char + len(question.answers[0])
    context = [i for i, sequence in enumerate(sequence_ids) if sequence == CONTEXT]
    if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return cls_index, cls_index
    first = next(i for i in context if offsets[i][1] > start_char)
    last = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return first, last


class QuestionAnsweringTask(Task):
    """SQuAD-style extractive QA: start and end logits over the tokens, exact match and F1 of the answer text.

    Args (besides `Task`'s):
        stride: tokens shared by consecutive windows of a long context.
        max_answer_tokens: the longest answer span predicted, in tokens.
        best_spans: start and end candidates per window (the highest logits) combined into spans.
        with_no_answer: questions may have no answer (SQuAD 2.0): trained to point at [CLS], predicted empty.
    """

    model_class = AutoModelForQuestionAnswering
    outputs = ("start_logits", "end_logits")
    per_token = frozenset(outputs)

    def __init__(self, stride: int, max_answer_tokens: int, best_spans: int, with_no_answer: bool, **task: Any):
        super().__init__(**task)
        if not 0 <= stride < self.max_length // 2:
            raise ValueError(f"task {self.name}: stride={stride} must be in 0..max_length/2 ({self.max_length // 2})")
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.best_spans = best_spans
        self.with_no_answer = with_no_answer
        self.metrics = check_metric_names(self.metrics, SQUAD_METRICS, self.name)

    def head_config(self) -> dict[str, Any]:
        return {}  # the QA head's two outputs (start, end) are the config's default num_labels

    def read_file(self, path: Path) -> list[Question]:
        questions = []
        for where, paragraph in squad_paragraphs(path):
            try:
                for qa in paragraph["qas"]:
                    answers = qa["answers"]
                    questions.append(
                        Question(
                            str(qa["id"]),
                            qa["question"],
                            paragraph["context"],
                            tuple(answer["text"] for answer in answers),
                            tuple(int(answer["answer_start"]) for answer in answers),
                        )
                    )
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{where} is not SQuAD JSON ({type(error).__name__}: {error}); expected "
                    '{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text", '
                    '"answer_start"}]}]}]}]}'
                ) from error
        if not questions:
            raise ValueError(f"{path} has no questions")
        return questions

    def from_hub(self, rows, where: str) -> list[Question]:
        return [
            Question(
                str(row["id"]),
                row["question"],
                row["context"],
                tuple(row["answers"]["text"]),
                tuple(row["answers"]["answer_start"]),
            )
            for row in rows
        ]

    def trainable(self, questions: list[Question]) -> list[Question]:
        """The questions a model can be trained on; the others are counted and logged."""
        kept, no_answer, misplaced = [], 0, 0
        for question in questions:
            if not question.answers:
                no_answer += not self.with_no_answer
                if self.with_no_answer:
                    kept.append(question)
                continue
            start, text = question.starts[0], question.answers[0]
            if question.context[start : start + len(text)] != text:
                misplaced += 1
                continue
            kept.append(question)
        if len(kept) < len(questions):
            log.warning(
                "%s: skipped %d of %d training questions: %d without an answer, %d whose answer text is not at its "
                "answer_start in the context",
                self.name,
                len(questions) - len(kept),
                len(questions),
                no_answer,
                misplaced,
            )
        if not kept:
            raise ValueError(f"task {self.name}: no training question has an answer found in its context")
        return kept

    def encode(self, examples: list[Question], tokenizer, training: bool) -> Encoded:
        questions = self.trainable(examples) if training else examples
        tokens = tokenizer(
            [q.question.lstrip() for q in questions],  # some SQuAD questions start with many spaces
            [q.context for q in questions],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        inputs = [k for k in tokens if k not in ("offset_mapping", "overflow_to_sample_mapping")]
        features, windows = [], []
        for i, index in enumerate(tokens["overflow_to_sample_mapping"]):
            feature = {k: tokens[k][i] for k in inputs}
            sequence_ids, offsets = tokens.sequence_ids(i), tokens["offset_mapping"][i]
            ids = tokens["input_ids"][i]
            cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            if training:
                feature["start_positions"], feature["end_positions"] = answer_span(
                    questions[index], sequence_ids, offsets, cls_index
                )
            else:
                context_offsets = [o if s == CONTEXT else None for o, s in zip(offsets, sequence_ids)]
                windows.append((index, context_offsets, cls_index))
            features.append(feature)
        return Encoded(features, (questions, windows))

    def soft_loss(self, student, teacher: dict[str, torch.Tensor], batch: dict, temperature: float) -> torch.Tensor:
        return span_soft_loss(
            student.start_logits,
            student.end_logits,
            teacher["start_logits"],
            teacher["end_logits"],
            batch["attention_mask"],
            temperature,
        )

    def best_span(self, start: torch.Tensor, end: torch.Tensor, offsets: list) -> tuple[float, tuple[int, int] | None]:
        """(score, character span) of the best answer span of one window; (-inf, None) when none is allowed."""
        best, span = -math.inf, None
        count = min(self.best_spans, len(start))
        for s in start.topk(count).indices.tolist():
            for e in end.topk(count).indices.tolist():
                if offsets[s] is None or offsets[e] is None or not 0 <= e - s < self.max_answer_tokens:
                    continue
                score = float(start[s] + end[e])
                if score > best:
                    best, span = score, (offsets[s][0], offsets[e][1])
        return best, span

    def score(self, dev: Encoded, outputs: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        questions, windows = dev.scoring
        best: dict[int, tuple[float, str]] = {}
        no_answer: dict[int, float] = {}
        for start, end, (index, offsets, cls_index) in zip(outputs["start_logits"], outputs["end_logits"], windows):
            start, end = start.float(), end.float()
            no_answer[index] = min(no_answer.get(index, math.inf), float(start[cls_index] + end[cls_index]))
            score, span = self.best_span(start, end, offsets)
            if span is not None and score > best.get(index, (-math.inf, ""))[0]:
                best[index] = (score, questions[index].context[span[0] : span[1]])
        predictions = {}
        for index, question in enumerate(questions):
            score, text = best.get(index, (-math.inf, ""))
            predictions[question.id] = "" if self.with_no_answer and no_answer[index] > score else text
        scores = squad_scores(predictions, {q.id: list(q.answers) for q in questions})
        return {name: scores[name] for name in self.metrics}
