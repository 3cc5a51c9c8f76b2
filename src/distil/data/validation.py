"""The validation set: fixed rows from held-out documents, cut into batches masked the same way on every pass.

Batch i is masked with a generator seeded by (seed, i), so every validation pass, every rank and both teacher
and student see identical masks. The dataset is map-style (item = one whole batch). DDP runs here set
`use_distributed_sampler: false` (the training stream shards itself), so every rank scores every validation batch:
the metrics, summed over ranks by torchmetrics, count each batch world-size times in both numerator and denominator,
so accuracy, perplexity and agreement are those of the single-process run. The repeated work is small next to
training (`limit_val_batches` batches per validation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from distil.data.masking import MaskingCollator, seeded_generator

VALIDATION_STREAM_ID = 2**31 - 1  # keeps validation masks independent of every training slot's


class ValidationBatches(Dataset):
    """Masked batches over `rows` (n, max_length); the last batch may hold fewer rows."""

    def __init__(self, rows: np.ndarray, collator: MaskingCollator, batch_size: int, seed: int) -> None:
        self.rows = rows
        self.collator = collator
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"validation batch {index} of {len(self)}")
        rows = list(self.rows[index * self.batch_size : (index + 1) * self.batch_size])
        return self.collator(rows, seeded_generator(self.seed, VALIDATION_STREAM_ID, index))
