"""Held-out masked-LM scoring shared by `distil.evaluate` (teacher vs student) and the INT8 gate of `distil.export`
(float vs INT8): accuracy, loss and perplexity at the masked positions of the same batches for every model, and top-1
agreement between pairs of them. A model is anything that gives logits at the masked positions (`MaskedLogits`):
a PyTorch model (`masked_logits`) or an ONNX Runtime session (`distil.exporting.onnx_model`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
from transformers import PreTrainedModel

from distil.families import model_parts
from distil.modules.losses import IGNORE_INDEX
from distil.modules.metrics import TokenPredictionMetrics, Top1Agreement

MaskedLogits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids, attention_mask, masked) -> vocabulary logits at the masked positions, one row per True of `masked`."""


def masked_logits(model: PreTrainedModel) -> MaskedLogits:
    """The masked positions' logits of a PyTorch masked-LM model (the vocabulary head runs only there)."""
    parts = model_parts(model)
    return lambda input_ids, attention_mask, masked: parts.vocab_head(parts.encode(input_ids, attention_mask)[masked])


@torch.inference_mode()
def masked_lm_scores(
    models: dict[str, MaskedLogits], batches: Iterable[dict], device: torch.device, agreement: dict[str, str]
) -> dict:
    """Masked-LM metrics of several models on the same batches, and top-1 agreements between them.

    Each batch holds `input_ids`, `attention_mask` and `labels` (-100 where a token is not masked). `agreement` maps
    a model to the one its top-1 predictions are compared with (e.g. {"student": "teacher"}). Returns
    {name: {"mlm_loss" (nats), "mlm_acc", "ppl", plus "top1_agreement" for the models in `agreement`}} and
    "masked_tokens".
    """
    metrics = {name: TokenPredictionMetrics().to(device) for name in models}
    agreements = {name: Top1Agreement().to(device) for name in agreement}
    for batch in batches:
        input_ids, attention_mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        masked = labels != IGNORE_INDEX
        logits = {name: model_logits(input_ids, attention_mask, masked) for name, model_logits in models.items()}
        for name, metric in metrics.items():
            metric.update(logits[name], labels[masked])
        for name, metric in agreements.items():
            metric.update(logits[name], logits[agreement[name]])
    count = int(next(iter(metrics.values())).count)
    if count == 0:
        raise ValueError("the held-out data has no masked tokens (labels are all -100): nothing to score")
    scores = {name: {k: float(v) for k, v in metric.compute().items()} for name, metric in metrics.items()}
    for name, metric in agreements.items():
        scores[name]["top1_agreement"] = float(metric.compute())
    scores["masked_tokens"] = count
    return scores


def held_out_batches(datamodule, max_batches: int | None) -> Iterable[dict]:
    """The validation batches of a `CorpusDataModule` (the first `max_batches`)."""
    datamodule.prepare_data()
    datamodule.setup("validate")
    batches = datamodule.val_dataloader()
    return batches if max_batches is None else itertools.islice(batches, max_batches)
