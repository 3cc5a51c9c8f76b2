"""What the terms on the vocabulary logits read of the teacher, a range of rows at a time: the plain step reads all
the selected rows at once, the chunked step (`distil.perf.chunked_vocab_loss`) one chunk after another.

`TeacherLogits` makes the live teacher's logits from its head features; `CachedTeacherTargets` slices the outputs a
teacher cache stored (`distil.topk_cache`). A term's loss receives what `rows` returns as its `teacher_logits`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F


class TeacherTargets(Protocol):
    def to(self, dtype: torch.dtype) -> TeacherTargets:
        """The same targets, any computation on them in `dtype`."""

    def rows(self, start: int, stop: int) -> Any:
        """The targets of rows [start, stop): what a term's loss takes as its `teacher_logits`."""


class TeacherLogits:
    """The live teacher's logits of the selected rows, projected from its head features (N, H) when asked for."""

    def __init__(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.features, self.weight, self.bias = features, weight, bias

    def to(self, dtype: torch.dtype) -> TeacherLogits:
        """The same logits computed in `dtype` (the projection cast once)."""
        return TeacherLogits(self.features, self.weight.to(dtype), self.bias.to(dtype))

    @torch.no_grad()
    def rows(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, V) logits."""
        return F.linear(self.features[start:stop].to(self.weight.dtype), self.weight, self.bias)


class CachedTeacherTargets:
    """The teacher's cached outputs at the selected rows: tensors of N rows each (`topk_kl_loss`'s arguments)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def to(self, dtype: torch.dtype) -> CachedTeacherTargets:
        """Itself: the cached values keep their stored precision (the loss reads them in float32)."""
        return self

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """(stop - start, ...) slices of each tensor."""
        return tuple(tensor[start:stop] for tensor in self.tensors)
