"""The official metric of each task kind, by the name `finetune.json` reports it under, from the standard packages.

GLUE (classification and regression): scikit-learn and SciPy, the functions GLUE's reference code calls.
NER: seqeval's entity-level precision, recall and F1 in its default mode, which is the CoNLL `conlleval` script's
definition (an `I-` tag after `O` or after another type starts an entity, so IOB1 and IOB2 tags give the same
entities). Extractive QA: torchmetrics' SQuAD, the official v1.1 evaluation script (answer normalisation: lower case,
no punctuation, no articles a/an/the, single spaces; exact match and token F1, the best over the gold answers).
Every value is on the 0..1 scale (correlations -1..1); tables print them x 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import f1_score as entity_f1
from seqeval.metrics import precision_score as entity_precision
from seqeval.metrics import recall_score as entity_recall
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torchmetrics.functional.text import squad

CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {  # (predicted, gold) -> value
    "accuracy": lambda predicted, gold: float(accuracy_score(gold, predicted)),
    "f1": lambda predicted, gold: float(f1_score(gold, predicted)),  # of class 1 (MRPC: paraphrase, QQP: duplicate)
    "matthews_correlation": lambda predicted, gold: float(matthews_corrcoef(gold, predicted)),
}
REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": lambda predicted, gold: float(pearsonr(predicted, gold).statistic),
    "spearman": lambda predicted, gold: float(spearmanr(predicted, gold).statistic),
}
ENTITY_METRICS = ("precision", "recall", "f1")  # seqeval, micro-averaged over the entities of all types
SQUAD_METRICS = ("exact_match", "f1")


def check_metric_names(names: Sequence[str], allowed: Sequence[str], task: str) -> list[str]:
    """`names` as a list; raises naming the task and the allowed names when one is unknown or none is given."""
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ValueError(f"task {task}: metrics={list(names)} is not allowed: give one or more of {list(allowed)}")
    return list(names)


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 of predicted tag sequences against gold ones (one list per sentence)."""
    functions = {"precision": entity_precision, "recall": entity_recall, "f1": entity_f1}
    return {name: float(function(gold, predicted)) for name, function in functions.items()}


def squad_scores(predictions: dict[str, str], gold_answers: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 of the predicted answer text of each question id against its gold answers.

    A question without a gold answer (SQuAD 2.0) is scored against the empty answer, as the official v2.0 script does:
    1 for an empty prediction, else 0.
    """
    targets = [{"id": qid, "answers": {"text": answers or [""]}} for qid, answers in gold_answers.items()]
    preds = [{"id": qid, "prediction_text": predictions[qid]} for qid in gold_answers]
    return {name: float(value) / 100 for name, value in squad(preds, targets).items()}
