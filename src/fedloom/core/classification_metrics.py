"""Classification metrics that stay meaningful on imbalanced labels: ROC AUC, macro F1, balanced accuracy.

Accuracy alone hides a model that ignores a rare class (95% accuracy by always
predicting the majority of a 95/5 table). Every built-in trainer's ``evaluate`` reports
these next to ``accuracy``, computed from the class probabilities it already has, in
one pass and in pure NumPy (no scikit-learn in ``src``). A metric that is undefined on
the data (AUC when the labels hold a single class) is left out rather than reported
as NaN: metric values must be finite to be stored and averaged (fedloom.core.metrics).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "balanced_accuracy",
    "binary_roc_auc",
    "classification_metrics",
    "macro_f1",
    "macro_roc_auc",
]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def binary_roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive``.

    The Mann-Whitney form: the chance that a random positive scores above a random
    negative, ties counting one half (average ranks), which equals the trapezoidal
    area under the ROC curve. None when there are no positives or no negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def macro_roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC from ``(samples, classes)`` probabilities: binary for two classes (the score of
    class 1), else the unweighted mean of the one-vs-rest AUCs. A class without positives or
    without negatives in ``y_true`` is skipped; None when no class is left."""
    y_true = np.asarray(y_true)
    if probs.shape[1] == 2:
        return binary_roc_auc(y_true == 1, probs[:, 1])
    areas = [binary_roc_auc(y_true == c, probs[:, c]) for c in range(probs.shape[1])]
    defined = [a for a in areas if a is not None]
    return float(np.mean(defined)) if defined else None


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``counts[true, predicted]`` as int64."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 = 2TP / (2TP + FP + FN) over the classes that occur in ``y_true`` or
    ``y_pred`` (scikit-learn's default label set); a class never predicted correctly counts 0."""
    counts = _confusion(y_true, y_pred, num_classes)
    tp = np.diag(counts).astype(np.float64)
    fp = counts.sum(axis=0) - tp
    fn = counts.sum(axis=1) - tp
    seen = (counts.sum(axis=0) + counts.sum(axis=1)) > 0
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1[seen].mean())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """The unweighted mean of the per-class recalls over the classes that occur in ``y_true``."""
    counts = _confusion(y_true, y_pred, num_classes)
    support = counts.sum(axis=1)
    present = support > 0
    recall = np.diag(counts)[present] / support[present]
    return float(recall.mean())


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``f1_macro`` and (when defined) ``auc`` of the
    ``(samples, classes)`` probabilities ``probs`` for the integer labels ``y_true``; the
    prediction is the most probable class (the first on ties)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y_true) or len(y_true) == 0:
        raise ValueError(f"need (samples, classes) probabilities for {len(y_true)} labels, got {probs.shape}")
    num_classes = probs.shape[1]
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got {y_true.min()}..{y_true.max()}")
    y_pred = probs.argmax(axis=1)
    metrics = {
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, num_classes),
        "f1_macro": macro_f1(y_true, y_pred, num_classes),
    }
    auc = macro_roc_auc(y_true, probs)
    if auc is not None:
        metrics["auc"] = auc
    return metrics
