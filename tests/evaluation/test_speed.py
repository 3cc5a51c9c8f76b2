"""Latency and throughput timing against forwards of known duration."""

import time

import pytest
import torch

from distil.evaluation.speed import measure_speed, median_forward_seconds

CPU = torch.device("cpu")


def sleeping_forward(seconds_per_sequence: float):
    """A 'model' whose forward takes `seconds_per_sequence` per row of the batch and records the shapes it saw."""
    shapes = []

    def forward(input_ids, attention_mask):
        shapes.append((tuple(input_ids.shape), tuple(attention_mask.shape), int(attention_mask.sum())))
        time.sleep(seconds_per_sequence * input_ids.shape[0])
        return input_ids

    return forward, shapes


def test_median_forward_time_of_a_20_ms_forward():
    forward, shapes = sleeping_forward(0.02)
    seconds = median_forward_seconds(forward, CPU, batch_size=1, max_length=16, vocab_size=100, min_run_time=0.2)
    assert 0.019 <= seconds <= 0.05  # sleep never returns early; a loaded machine adds a little
    assert len(shapes) >= 10  # blocks until 0.2 s of timed calls, after a warm-up
    assert set(shapes) == {((1, 16), (1, 16), 16)}  # full attention mask


def test_throughput_is_sequences_per_second_of_the_batch_forward():
    forward, shapes = sleeping_forward(0.005)
    speed = measure_speed(
        forward, CPU, vocab_size=100, max_length=8, latency_batch=1, throughput_batch=4, min_run_time=0.06
    )
    assert 4.9 <= speed["latency_ms"] <= 15.0  # one sequence: 5 ms
    assert 80 <= speed["throughput_seq_per_s"] <= 201  # 4 sequences per 20 ms: 200 sequences/s at best
    assert {s[0] for s in shapes} == {(1, 8), (4, 8)}


def test_timing_inputs_are_token_ids_of_the_vocabulary():
    seen = []
    median_forward_seconds(
        lambda ids, mask: seen.append(ids), CPU, batch_size=3, max_length=50, vocab_size=7, min_run_time=0.001
    )
    assert seen[0].dtype == torch.long and 0 <= int(seen[0].min()) and int(seen[0].max()) <= 6


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"min_run_time": 0}, {"max_length": 0}])
def test_bad_timing_settings_are_rejected(bad):
    settings = {"batch_size": 1, "max_length": 4, "vocab_size": 10, "min_run_time": 0.001} | bad
    with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
        median_forward_seconds(lambda ids, mask: ids, CPU, **settings)
