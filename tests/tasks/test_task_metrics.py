"""Each task kind's official metrics against values computed by hand."""

import math

import numpy as np
import pytest

from distil.tasks.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    check_metric_names,
    entity_scores,
    squad_scores,
)


def test_classification_metrics_by_hand():
    gold = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    predicted = np.array([1, 1, 0, 0, 1, 0, 1, 0])  # TP 3, FN 1, FP 1, TN 3
    tp, fn, fp, tn = 3, 1, 1, 3
    assert CLASSIFICATION_METRICS["accuracy"](predicted, gold) == pytest.approx(6 / 8)
    assert CLASSIFICATION_METRICS["f1"](predicted, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert CLASSIFICATION_METRICS["matthews_correlation"](predicted, gold) == pytest.approx(mcc)  # 0.5


def test_regression_metrics_by_hand():
    gold = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.0, 3.0, 2.0, 5.0])
    # Pearson: deviations gold (-1.5, -0.5, 0.5, 1.5), predicted (-1.75, 0.25, -0.75, 2.25)
    dg, dp = gold - gold.mean(), predicted - predicted.mean()
    pearson = (dg * dp).sum() / math.sqrt((dg**2).sum() * (dp**2).sum())
    assert REGRESSION_METRICS["pearson"](predicted, gold) == pytest.approx(pearson)
    # Spearman: ranks gold 1 2 3 4, predicted 1 3 2 4: 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert REGRESSION_METRICS["spearman"](predicted, gold) == pytest.approx(0.8)


def test_entity_scores_count_whole_entities():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
    # gold entities: PER(0-1), LOC(3), ORG(0-2); predicted: PER(0-1) correct, ORG(3) wrong, ORG(0-1) wrong span
    scores = entity_scores(gold, predicted)
    assert scores == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    iob1 = [["I-PER", "I-PER", "O", "I-LOC"]]  # conlleval's reading: an I- after O starts an entity
    assert entity_scores(gold[:1], iob1) == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})


def test_squad_scores_use_the_official_normalisation():
    predictions = {"q1": "The Eiffel Tower!", "q2": "in Paris France", "q3": "nothing", "q4": ""}
    gold = {"q1": ["eiffel tower"], "q2": ["Paris", "Paris, France"], "q3": ["London"], "q4": []}
    # q1: articles and punctuation dropped: exact. q2: best gold "paris france" vs "in paris france": P 2/3, R 1,
    # F1 0.8. q3: 0. q4 (no answer, SQuAD 2.0): the empty prediction is exact.
    scores = squad_scores(predictions, gold)
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 0.8 + 0 + 1) / 4)


def test_unknown_metric_names_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"task cola: metrics=\['mcc'\] is not allowed: give one or more of"):
        check_metric_names(["mcc"], list(CLASSIFICATION_METRICS), "cola")
