"""Held-out token-prediction metrics (torchmetrics, so they sum correctly across batches and DDP ranks), and what
each kind of language model is scored on and how its numbers are named (`Prediction`): the one owner of those names
for validation, the end-of-run table, `distil.evaluate` and the INT8 gate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics import Metric


@dataclass(frozen=True)
class Prediction:
    """What a kind of language model is scored on, as the scores, reports and tables name it.

    name: the metrics' prefix (`TokenPredictionMetrics`): `<name>_loss`, `<name>_acc`.
    label: the metrics in tables, e.g. "masked-LM" in "masked-LM accuracy (%)".
    tokens: the scored positions in words, e.g. "masked tokens"; with "_" for " ", the key of their count.
    head: the model's vocabulary head in words (what `speed.with_mlm_head` adds to the timed forward).
    """

    name: str
    label: str
    tokens: str
    head: str

    @property
    def accuracy(self) -> str:
        return f"{self.name}_acc"

    @property
    def loss(self) -> str:
        return f"{self.name}_loss"

    @property
    def count_key(self) -> str:
        return self.tokens.replace(" ", "_")


MASKED_TOKENS = Prediction("mlm", "masked-LM", "masked tokens", "MLM head")
NEXT_TOKENS = Prediction("next_token", "next-token", "next tokens", "LM head")
PREDICTIONS = {prediction.name: prediction for prediction in (MASKED_TOKENS, NEXT_TOKENS)}  # by report["prediction"]


def prediction_of(causal: bool) -> Prediction:
    """The next tokens of a causal LM, the masked tokens of a masked LM."""
    return NEXT_TOKENS if causal else MASKED_TOKENS


class TokenPredictionMetrics(Metric):
    """Cross-entropy, top-1 accuracy and perplexity of a model's predictions at the positions with a label: the
    masked tokens of a masked LM (`prediction="mlm"`), the next tokens of a causal LM (`"next_token"`): the `name`
    of a `Prediction`.

    `update(logits, labels)` takes (N, V) logits and (N,) target token ids at the N labelled positions.
    `compute()` returns {"<prediction>_loss": mean CE in nats, "<prediction>_acc": fraction correct,
    "ppl": exp(mean CE)}, each averaged over all labelled tokens seen (not over batches).
    """

    full_state_update = False

    def __init__(self, prediction: str = "mlm") -> None:
        super().__init__()
        self.prediction = prediction
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        self.correct += (logits.argmax(dim=-1) == labels).sum()
        self.count += labels.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        mean_loss = self.loss_sum / self.count.clamp(min=1)
        return {
            f"{self.prediction}_loss": mean_loss.float(),
            f"{self.prediction}_acc": (self.correct.double() / self.count.clamp(min=1)).float(),
            "ppl": torch.exp(mean_loss).float(),
        }


class Top1Agreement(Metric):
    """Fraction of labelled positions where the student's and the teacher's top-1 predictions are the same token."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("agree", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        self.agree += (student_logits.argmax(dim=-1) == teacher_logits.argmax(dim=-1)).sum()
        self.count += student_logits.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.agree.double() / self.count.clamp(min=1)).float()
