"""Split a masked-LM into its encoder (tokens -> hidden states) and its vocabulary head (hidden states -> logits).

Distillation needs the two apart: the encoders run on every position, the 30522-way vocabulary projection only on
the positions a loss covers. To distil another architecture, add its split here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import BertForMaskedLM, DistilBertForMaskedLM

Encoder = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
VocabHead = Callable[[torch.Tensor], torch.Tensor]
OutputProjection = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def encoder_of(model: nn.Module) -> Encoder:
    """`encode(input_ids, attention_mask) -> last hidden states (B, L, H)` for a BERT or DistilBERT masked-LM."""
    if isinstance(model, BertForMaskedLM):
        return lambda input_ids, attention_mask: (
            model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        )
    if isinstance(model, DistilBertForMaskedLM):
        return lambda input_ids, attention_mask: (
            model.distilbert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        )
    raise TypeError(f"no encoder split for {type(model).__name__}; supported: BertForMaskedLM, DistilBertForMaskedLM")


def vocab_head_of(model: nn.Module) -> VocabHead:
    """`head(hidden (N, H)) -> logits (N, V)`: the model's own masked-LM head, applied to selected rows.

    A plain function, not a module, so holding it does not register the head's weights a second time.
    """
    if isinstance(model, BertForMaskedLM):
        return lambda hidden: model.cls(hidden)
    if isinstance(model, DistilBertForMaskedLM):
        return lambda hidden: model.vocab_projector(
            model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
        )
    raise TypeError(f"no MLM head split for {type(model).__name__}; supported: BertForMaskedLM, DistilBertForMaskedLM")


def head_features_of(model: nn.Module) -> VocabHead:
    """`features(hidden (N, H)) -> (N, H)`: the MLM head up to, not including, its vocabulary projection.

    `head(h) == features(h) @ weight.T + bias` with `(weight, bias) = output_projection_of(model)()`; the fused
    chunked loss uses the two parts apart so that it can project a few rows at a time.
    """
    if isinstance(model, BertForMaskedLM):
        return lambda hidden: model.cls.predictions.transform(hidden)
    if isinstance(model, DistilBertForMaskedLM):
        return lambda hidden: model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
    raise TypeError(f"no MLM head split for {type(model).__name__}; supported: BertForMaskedLM, DistilBertForMaskedLM")


def output_projection_of(model: nn.Module) -> OutputProjection:
    """`() -> (weight (V, H), bias (V,))` of the model's vocabulary projection, read at call time.

    Read at call time so that a later dtype or device move of the model is seen.
    """
    if isinstance(model, BertForMaskedLM):
        return lambda: (model.cls.predictions.decoder.weight, model.cls.predictions.bias)
    if isinstance(model, DistilBertForMaskedLM):
        return lambda: (model.vocab_projector.weight, model.vocab_projector.bias)
    raise TypeError(f"no MLM head split for {type(model).__name__}; supported: BertForMaskedLM, DistilBertForMaskedLM")
