"""Which token positions of a batch the losses read, found on the host before the batch moves to the device.

Selecting rows with a boolean mask on the GPU (`hidden[labels != -100]`) makes the output size depend on the mask's
contents: the host must wait for the GPU to count them (a device sync every step) and the shapes change from batch
to batch (a compiled graph cannot be reused). Computing the flat positions on the host copy of the batch costs
microseconds, and the lengths of the two index tensors then carry the counts statically: a batch of full rows masks a
constant number of positions (the collator picks exactly ceil(15% x content tokens)), so every step has the same
shapes. The index travels beside the batch (`IndexedBatch`), never inside it: batches carry model inputs only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from distil.modules.losses import IGNORE_INDEX


class RowIndex(NamedTuple):
    """Flat positions (row-major over B x L, ascending) of the masked tokens, and of the real tokens (None when every
    position is real: no padding, so attention needs no mask)."""

    masked: torch.Tensor
    real: torch.Tensor | None

    @classmethod
    def of(cls, batch: dict[str, torch.Tensor]) -> RowIndex:
        """The index of a batch with `labels` and `attention_mask` (on the host: no device sync)."""
        masked = torch.nonzero(batch["labels"].flatten() != IGNORE_INDEX).squeeze(1)
        real = torch.nonzero(batch["attention_mask"].flatten()).squeeze(1)
        return cls(masked, None if real.numel() == batch["attention_mask"].numel() else real)

    @property
    def padding_free(self) -> bool:
        return self.real is None


class IndexedBatch(NamedTuple):
    """A batch of model inputs and the row index found for it on the host."""

    inputs: dict[str, torch.Tensor]
    rows: RowIndex


def select_rows(flat: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows `index` of a (B*L, ...) tensor; all rows when index is None."""
    return flat if index is None else flat.index_select(0, index)
