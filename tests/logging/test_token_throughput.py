"""TokenThroughput: tokens of all ranks per second over the last `window` batches, from host clocks only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distil.run.callbacks import token_throughput
from distil.run.callbacks.token_throughput import TokenThroughput


class LogRecorder:
    def __init__(self) -> None:
        self.logged: list[tuple[str, float]] = []

    def log(self, name, value, **kwargs) -> None:
        self.logged.append((name, value))


def test_rate_over_the_window_counts_every_rank_and_restarts_after_validation(monkeypatch):
    clock = iter([10.0, 10.5, 11.0, 12.0, 20.0, 20.25])
    monkeypatch.setattr(token_throughput.time, "perf_counter", lambda: next(clock))
    callback, module = TokenThroughput(window=2), LogRecorder()
    trainer = SimpleNamespace(world_size=2)
    batch = {"input_ids": torch.zeros(4, 32, dtype=torch.long)}  # 128 tokens per rank, 256 over both ranks

    for _ in range(4):
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    callback.on_validation_start(trainer, module)
    for _ in range(2):
        callback.on_train_batch_end(trainer, module, None, batch, 0)

    rates = [value for _, value in module.logged]
    # no rate after the first batch; then 256 / 0.5 s, 512 / 1.0 s (window of 2), 512 / 1.5 s (oldest dropped);
    # after validation the window restarts: 256 / 0.25 s
    assert rates == pytest.approx([512.0, 512.0, 512.0 / 1.5, 1024.0])
    assert {name for name, _ in module.logged} == {"train/tokens_per_s"}


@pytest.mark.parametrize("window", [0, -3, 2.5])
def test_window_must_be_a_positive_integer(window):
    with pytest.raises(ValueError, match=f"callbacks.token_throughput.window={window}"):
        TokenThroughput(window=window)
