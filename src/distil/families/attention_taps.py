"""Taps on a model's attention: the queries, keys and values of chosen layers, caught in the forward pass the step
runs anyway (no second copy of the encoder, no second pass), for the terms that compare attention (MiniLM, TinyBERT).

Every supported family's attention module hands its queries, keys and values (after its position encoding: RoPE for
ModernBERT and the Llama layout) to transformers' attention function, looked up by the name in its config
(`config._attn_implementation`, e.g. "sdpa"). A tapped layer's module gets its own copy of the config naming
`distil_tap`, registered here: it records the inputs and calls the model's own attention function, so the tapped
layers keep the fused attention too, and every other layer is untouched. The model's `config` (saved with it) is not
changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

TAP = "distil_tap"  # the attention function name a tapped module's config carries


@dataclass(frozen=True)
class AttentionInputs:
    """What one attention module computed its attention from, in one forward pass.

    query: (B, H, L, d); key, value: (B, H_kv, L, d), H_kv dividing H (grouped-query attention).
    allowed: bool, broadcastable to (B, 1, L, L): the keys each query may attend to (padding, causal order and any
        sliding window, from the mask the model built itself).
    scaling: the factor of the dot products (1 / sqrt(d) for most families).
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    allowed: torch.Tensor
    scaling: float


def allowed_keys(attention_mask: torch.Tensor | None, is_causal: bool, length: int, device) -> torch.Tensor:
    """The keys each query may attend to, from the mask an attention function gets: a boolean mask (True = attend),
    an additive one (0 = attend, the dtype's minimum = not), or None (every key, or the causal order)."""
    if attention_mask is None:
        every = torch.ones(length, length, dtype=torch.bool, device=device)
        return (every.tril() if is_causal else every)[None, None]
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def tapped_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The attention function of tapped modules: record the inputs, then run the model's own attention function."""
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", False) if is_causal is None else is_causal
    scaling = kwargs.get("scaling")
    module.distil_attention = AttentionInputs(
        query,
        key,
        value,
        allowed_keys(attention_mask, bool(is_causal) and query.shape[2] > 1, query.shape[2], query.device),
        query.shape[-1] ** -0.5 if scaling is None else scaling,
    )
    return module.distil_attention_function(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(TAP, tapped_attention)


class AttentionTaps:
    """Taps on attention modules of `model` (`modules`: layer -> its attention module, the family's
    `attention_module`); `take()` returns what each recorded in the last forward pass, by layer, and lets go of it."""

    def __init__(self, model: PreTrainedModel, modules: Mapping[int, nn.Module]) -> None:
        implementation = model.config._attn_implementation
        function = ALL_ATTENTION_FUNCTIONS.get(implementation, ALL_ATTENTION_FUNCTIONS["sdpa"])  # eager -> SDPA
        self.modules = dict(sorted(modules.items()))
        for module in self.modules.values():
            module.config = copy.copy(module.config)
            module.config._attn_implementation = TAP
            module.distil_attention_function = function
            module.distil_attention = None

    def take(self) -> dict[int, AttentionInputs]:
        inputs = {layer: module.distil_attention for layer, module in self.modules.items()}
        missing = [layer for layer, value in inputs.items() if value is None]
        if missing:
            raise RuntimeError(f"attention layers {missing} recorded nothing: was the model run since the last take?")
        for module in self.modules.values():
            module.distil_attention = None
        return inputs
