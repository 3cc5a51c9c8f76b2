"""Held-out scoring of language models, shared by `distil.evaluate` (teacher vs student) and the INT8 gate of
`distil.export` (float vs INT8): loss, top-1 accuracy and perplexity at the labelled positions of the same batches
for every model, and top-1 agreement between pairs of them.

A masked LM is scored at its masked positions (the label is the original token), a causal LM at every position that
has a next real token (the label is that token: causal batches hold their labels already shifted,
`distil.data.next_token`), so one function scores both kinds; the kind only names the numbers
(`distil.modules.metrics.Prediction`). A model is anything that gives logits at the labelled positions
(`ScoredLogits`): a PyTorch model (`scored_logits`) or an ONNX Runtime session (`distil.exporting.onnx_model`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
from transformers import PreTrainedModel

from distil.families import model_parts
from distil.modules.losses import IGNORE_INDEX
from distil.modules.metrics import Prediction, TokenPredictionMetrics, Top1Agreement

ScoredLogits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids, attention_mask, scored) -> vocabulary logits at the scored positions, one row per True of `scored`."""


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
