"""Held-out scoring of language models, shared by `distil.evaluate` (teacher vs student) and the INT8 gate of
`distil.export` (float vs INT8): loss, top-1 accuracy and perplexity at the labelled positions of the same batches
for every model, and top-1 agreement between pairs of them.

A masked LM is scored at its masked positions (the label is the original token), a causal LM at every position that
has a next real token (the label is that token: causal batches hold their labels already shifted,
`distil.data.next_token`), so one function scores both kinds; the kind only names the numbers (`Prediction`). A model
is anything that gives logits at the labelled positions (`ScoredLogits`): a PyTorch model (`scored_logits`) or an
ONNX Runtime session (`distil.exporting.onnx_model`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from distil.families import model_parts
from distil.modules.losses import IGNORE_INDEX
from distil.modules.metrics import TokenPredictionMetrics, Top1Agreement

ScoredLogits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids, attention_mask, scored) -> vocabulary logits at the scored positions, one row per True of `scored`."""


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


def scored_logits(model: PreTrainedModel) -> ScoredLogits:
    """The scored positions' logits of a PyTorch language model (the vocabulary head runs only there)."""
    parts = model_parts(model)
    return lambda input_ids, attention_mask, scored: parts.vocab_head(parts.encode(input_ids, attention_mask)[scored])


@torch.inference_mode()
def held_out_scores(
    models: dict[str, ScoredLogits],
    batches: Iterable[dict],
    device: torch.device,
    agreement: dict[str, str],
    prediction: Prediction,
) -> dict:
    """Token-prediction metrics of several models on the same batches, and top-1 agreements between them.

    Each batch holds `input_ids`, `attention_mask` and `labels` (-100 where a position is not scored: not masked, or
    without a next real token). `agreement` maps a model to the one its top-1 predictions are compared with (e.g.
    {"student": "teacher"}). Returns {name: {`prediction.loss` (nats), `prediction.accuracy`, "ppl", plus
    "top1_agreement" for the models in `agreement`}} and the number of scored tokens under `prediction.count_key`
    (e.g. "masked_tokens").
    """
    metrics = {name: TokenPredictionMetrics(prediction.name).to(device) for name in models}
    agreements = {name: Top1Agreement().to(device) for name in agreement}
    for batch in batches:
        input_ids, attention_mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        scored = labels != IGNORE_INDEX
        logits = {name: model_logits(input_ids, attention_mask, scored) for name, model_logits in models.items()}
        for name, metric in metrics.items():
            metric.update(logits[name], labels[scored])
        for name, metric in agreements.items():
            metric.update(logits[name], logits[agreement[name]])
    count = int(next(iter(metrics.values())).count)
    if count == 0:
        raise ValueError(f"the held-out data has no {prediction.tokens} (labels are all -100): nothing to score")
    scores = {name: {k: float(v) for k, v in metric.compute().items()} for name, metric in metrics.items()}
    for name, metric in agreements.items():
        scores[name]["top1_agreement"] = float(metric.compute())
    scores[prediction.count_key] = count
    return scores


def held_out_batches(datamodule, max_batches: int | None) -> Iterable[dict]:
    """The validation batches of a `CorpusDataModule` (the first `max_batches`)."""
    datamodule.prepare_data()
    datamodule.setup("validate")
    batches = datamodule.val_dataloader()
    return batches if max_batches is None else itertools.islice(batches, max_batches)
