"""Training throughput as a logged metric: `train/tokens_per_s`, token positions of all ranks per wall-clock second.

The rate is taken over the last `window` batches from host timestamps and batch shapes only, so it never waits for
the device. The host runs at most a few steps ahead of the GPU, so over a window of 20 steps the rate is the GPU's;
a validation pass starts a new window instead of counting as training time.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning.pytorch as pl

from distil.modules.row_index import IndexedBatch


class TokenThroughput(pl.Callback):
    """Logs `train/tokens_per_s`: tokens (all ranks, padding included) trained per second over the last batches.

    Args:
        window: batches the rate is averaged over (>= 1).
    """

    def __init__(self, window: int = 20) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"callbacks.token_throughput.window={window!r} is not allowed: an integer >= 1")
        self.window = window
        self.stamps: deque[tuple[float, int]] = deque(maxlen=window + 1)  # (time, tokens so far) after each batch

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        inputs = batch.inputs if isinstance(batch, IndexedBatch) else batch  # the model inputs of the step
        tokens_so_far = (self.stamps[-1][1] if self.stamps else 0) + inputs["input_ids"].numel() * trainer.world_size
        self.stamps.append((time.perf_counter(), tokens_so_far))
        if len(self.stamps) > 1:
            (start, tokens_at_start), (now, tokens_now) = self.stamps[0], self.stamps[-1]
            rate = (tokens_now - tokens_at_start) / max(now - start, 1e-9)
            pl_module.log("train/tokens_per_s", rate, on_step=True, on_epoch=False, prog_bar=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stamps.clear()
