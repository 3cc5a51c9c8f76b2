"""Masking collator: exact count, specials and padding never masked, 80/10/10, smoothing, reproducibility."""

import math

import numpy as np
import pytest
import torch

from distil.data.masking import IGNORE_INDEX, MaskingCollator
from distil.data.packing import pad_rows

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 50
LENGTH = 64


def collator(**kwargs) -> MaskingCollator:
    return MaskingCollator(VOCAB, MASK, PAD, [PAD, UNK, CLS, SEP, MASK], LENGTH, **kwargs)


def full_rows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(5, VOCAB, size=(n, LENGTH))
    rows[:, 0], rows[:, -1] = CLS, SEP
    rows[:, 20] = SEP  # a document border inside every row
    return list(rows)


def test_full_row_batches_always_mask_the_same_exact_number():
    counts = {
        int((collator()(full_rows(8, seed), torch.Generator().manual_seed(seed))["labels"] != IGNORE_INDEX).sum())
        for seed in range(20)
    }
    assert counts == {math.ceil(0.15 * 8 * (LENGTH - 2))}


def test_labels_hold_originals_and_specials_and_padding_are_never_masked():
    rows = full_rows(6)
    rows[5] = rows[5][:40].copy()  # a short final row, padded by the collator
    rows[5][-1] = SEP
    batch = collator()(rows, torch.Generator().manual_seed(1))
    original, _ = pad_rows(rows, LENGTH, PAD)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (6, LENGTH)
    assert batch["attention_mask"][5].tolist() == [1] * 40 + [0] * 24
    assert batch["input_ids"][5, 40:].tolist() == [PAD] * 24
    chosen = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert not chosen[original < 5].any()  # no special token, no padding
    n_content = 5 * (LENGTH - 2) + (40 - 2)
    assert int(chosen.sum()) == math.ceil(0.15 * n_content)
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])


def test_replacements_are_80_percent_mask_10_random_10_unchanged():
    rows = full_rows(64)
    original, attention = pad_rows(rows, LENGTH, PAD)
    batch = collator().mask(original, attention, torch.Generator().manual_seed(0))
    chosen = batch["labels"] != IGNORE_INDEX
    new = batch["input_ids"][chosen]
    n = int(chosen.sum())  # 605 positions
    masked = int((new == MASK).sum())
    unchanged = int((new == original[chosen]).sum())
    assert abs(masked / n - 0.8) < 0.04
    assert abs(unchanged / n - 0.1) < 0.03  # random draws may also hit the original token (1/45)
    assert int((new < 5).sum()) == masked  # random replacements are never special tokens


def test_same_generator_seed_gives_the_same_masks():
    rows = full_rows(4)
    first = collator()(rows, torch.Generator().manual_seed(7))
    again = collator()(rows, torch.Generator().manual_seed(7))
    other = collator()(rows, torch.Generator().manual_seed(8))
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])


def test_smoothing_masks_rare_tokens_more_often():
    counts = np.full(VOCAB, 1000)
    counts[5] = 1  # token 5 is rare
    rows = [np.array([CLS] + [5] * 10 + [6] * 52 + [SEP]) for _ in range(4)]
    smoothed = collator(mlm_smoothing=0.7, token_counts=counts)
    uniform = collator()
    rare_share = []
    for masker in (uniform, smoothed):
        labels = masker(rows, torch.Generator().manual_seed(0))["labels"]
        rare_share.append(float((labels == 5).sum() / (labels != IGNORE_INDEX).sum()))
    assert rare_share[0] < 0.35  # uniform: about 10/62 of the chosen positions
    assert rare_share[1] > 0.85  # weight 1 vs 1000^-0.7 = 0.008 each: 40 rare positions hold 96% of the weight


def test_smoothing_without_counts_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="distil.prepare"):
        collator(mlm_smoothing=0.7)
    with pytest.raises(ValueError, match="mlm_probability=1.5"):
        collator(mlm_probability=1.5)
