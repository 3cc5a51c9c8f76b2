"""LayerNorm that computes in the autocast dtype, so a BERT's residual stream stays in bf16 under bf16-mixed.

CUDA autocast runs `layer_norm` in fp32 and returns fp32. In a BERT layer every residual sum is then fp32 (bf16
sublayer output + fp32 residual), and the next matrix product first casts it back to bf16: each 768-wide activation is
written and read in fp32 and copied to bf16, forward and backward. `LowPrecisionLayerNorm` casts its input and
weights to the autocast dtype and normalises there (statistics are still accumulated in fp32 inside the kernel), so
the residual stream, the casts and the saved activations are all half the size. Outside autocast it is `nn.LayerNorm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LowPrecisionLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` whose input, weights and output are in the autocast dtype while autocast is on."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        device_type = hidden.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().forward(hidden)
        dtype = torch.get_autocast_dtype(device_type)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return F.layer_norm(hidden.to(dtype), self.normalized_shape, weight, bias, self.eps)


def use_low_precision_layer_norm(model: nn.Module) -> int:
    """Replace every `nn.LayerNorm` of `model` in place by a `LowPrecisionLayerNorm` holding the same parameters.

    Parameter objects, names and the state dict are unchanged. Returns how many were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm:
                low = LowPrecisionLayerNorm(child.normalized_shape, child.eps, child.elementwise_affine, bias=False)
                low.weight, low.bias = child.weight, child.bias
                low.train(child.training)
                setattr(parent, name, low)
                replaced += 1
    return replaced
