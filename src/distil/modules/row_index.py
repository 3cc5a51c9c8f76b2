"""Which token positions of a batch the losses read, as index tensors whose lengths are known on the host.

Selecting rows with a boolean mask on the GPU (`hidden[labels != -100]`) makes the output size depend on the mask's
contents: the host must wait for the GPU to count them (a device sync every step) and the shapes change from batch
to batch (a compiled graph cannot be reused). Computing the flat positions on the host copy of the batch, before it
is moved to the GPU, costs microseconds, and the lengths of the two index tensors then carry the counts statically:
a batch of full rows masks a constant number of positions (the collator picks exactly ceil(15% x content tokens)),
so every step has the same shapes.

Optional batch keys (the collator may provide them; `with_row_index` adds them otherwise):
    masked_index: int64 (n,), flat positions (row-major over B x L) whose label is not -100, ascending.
    real_index:   int64 (m,), flat positions whose attention_mask is 1, ascending; m == B x L means no padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
MASKED_INDEX = "masked_index"
REAL_INDEX = "real_index"


def with_row_index(batch: dict) -> dict:
    """The batch with `masked_index` and `real_index` added (computed where the tensors are: call it on the host)."""
    return batch | {
        MASKED_INDEX: torch.nonzero(batch["labels"].flatten() != IGNORE_INDEX).squeeze(1),
        REAL_INDEX: torch.nonzero(batch["attention_mask"].flatten()).squeeze(1),
    }


@dataclass(frozen=True)
class RowIndex:
    """Flat positions of the masked tokens, and of the real tokens (None when every position is real)."""

    masked: torch.Tensor
    real: torch.Tensor | None

    @property
    def padding_free(self) -> bool:
        """True when no position is padding: attention needs no mask."""
        return self.real is None


def row_index_of(batch: dict) -> RowIndex:
    """The batch's row index, from its index keys when present, else from its masks (a device sync on a GPU)."""
    if MASKED_INDEX not in batch or REAL_INDEX not in batch:
        batch = with_row_index(batch)
    real = batch[REAL_INDEX]
    return RowIndex(masked=batch[MASKED_INDEX], real=None if real.numel() == batch["input_ids"].numel() else real)


def select_rows(flat: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows `index` of a (B*L, ...) tensor; all rows when index is None."""
    return flat if index is None else flat.index_select(0, index)
