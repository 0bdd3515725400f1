"""The imbalance-aware metrics agree with scikit-learn to 1e-9, on random and on tied scores."""

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from fedloom.core.classification_metrics import (
    average_ranks,
    balanced_accuracy,
    binary_roc_auc,
    classification_metrics,
    macro_f1,
    macro_roc_auc,
)

TOL = 1e-9


def _probs(rng: np.random.Generator, n: int, k: int, decimals: int | None = None) -> np.ndarray:
    logits = rng.normal(size=(n, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:  # coarse scores: many exact ties within and across classes
        probs = np.round(probs, decimals)
    return probs


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1])
def test_binary_auc_matches_sklearn_with_and_without_ties(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=300)
    probs = _probs(rng, 300, 2, decimals)
    assert macro_roc_auc(y, probs) == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=TOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1])
def test_multiclass_auc_is_sklearns_macro_one_vs_rest(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=400)
    probs = _probs(rng, 400, 4)
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    if decimals is not None:  # sklearn's multiclass path insists on rows summing to 1: compare per class
        probs = np.round(probs, decimals)
        expected = np.mean([roc_auc_score(y == c, probs[:, c]) for c in range(4)])
    assert macro_roc_auc(y, probs) == pytest.approx(expected, abs=TOL)


def test_all_scores_tied_give_one_half_and_perfect_scores_give_one():
    y = np.array([0, 1, 1, 0, 1])
    assert binary_roc_auc(y == 1, np.full(5, 0.3)) == 0.5
    assert binary_roc_auc(y == 1, y.astype(float)) == 1.0
    assert binary_roc_auc(y == 1, -y.astype(float)) == 0.0


def test_average_ranks_share_the_mean_rank_of_a_tie():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4.0, 1.0, 4.0, 2.0, 4.0])


def test_a_class_without_positives_or_negatives_is_skipped_never_nan():
    rng = np.random.default_rng(7)
    probs = _probs(rng, 60, 4)
    y = rng.choice([0, 2, 3], size=60)  # class 1 has no positives
    expected = np.mean([roc_auc_score(y == c, probs[:, c]) for c in (0, 2, 3)])
    assert macro_roc_auc(y, probs) == pytest.approx(expected, abs=TOL)
    single = np.zeros(60, dtype=np.int64)  # one class only: every class lacks positives or negatives
    assert macro_roc_auc(single, probs) is None
    assert binary_roc_auc(np.ones(5, dtype=bool), np.arange(5.0)) is None
    metrics = classification_metrics(single, probs)
    assert "auc" not in metrics and all(math.isfinite(v) for v in metrics.values())
    binary = classification_metrics(np.ones(8, dtype=np.int64), _probs(rng, 8, 2))
    assert "auc" not in binary and set(binary) == {"accuracy", "balanced_accuracy", "f1_macro"}


@pytest.mark.parametrize("seed", range(5))
def test_f1_and_balanced_accuracy_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=250)
    pred = np.where(rng.random(250) < 0.6, y, rng.integers(0, 5, size=250))
    assert macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro"), abs=TOL)
    assert balanced_accuracy(y, pred, 5) == pytest.approx(balanced_accuracy_score(y, pred), abs=TOL)


def test_classes_missing_from_truth_or_predictions_follow_sklearns_label_set():
    y = np.array([0, 0, 0, 1, 1, 3])  # class 2 nowhere, class 3 never predicted, class 4 only predicted
    pred = np.array([0, 0, 1, 1, 4, 0])
    assert macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=TOL)
    with pytest.warns(UserWarning):  # sklearn warns that class 4 is predicted but never true
        expected = balanced_accuracy_score(y, pred)
    assert balanced_accuracy(y, pred, 5) == pytest.approx(expected, abs=TOL)


def test_the_majority_vote_on_a_95_5_table_scores_high_accuracy_but_chance_on_the_rest():
    y = np.array([0] * 95 + [1] * 5)
    probs = np.tile([0.9, 0.1], (100, 1))
    metrics = classification_metrics(y, probs)
    assert metrics == {"accuracy": 0.95, "balanced_accuracy": 0.5, "f1_macro": pytest.approx(0.95 / 1.95), "auc": 0.5}


def test_predictions_break_ties_to_the_first_class_and_bad_inputs_are_refused():
    assert classification_metrics(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]))["accuracy"] == 0.5
    with pytest.raises(ValueError, match="labels must be in"):
        classification_metrics(np.array([0, 2]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="probabilities"):
        classification_metrics(np.array([0, 1]), np.full((3, 2), 0.5))


def test_huge_and_tiny_scores_rank_exactly():
    y = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([1e-300, 1e300, -1e300, 5e-324, 1e300, 0.0])
    assert binary_roc_auc(y == 1, scores) == pytest.approx(roc_auc_score(y, scores), abs=TOL)


def test_the_metric_names_pass_the_receivers_validation_unchanged():
    """What the aggregator, the store and the trackers apply to reported metrics (fedloom.core.metrics)."""
    from fedloom.core.metrics import validate_metrics

    rng = np.random.default_rng(0)
    metrics = classification_metrics(rng.integers(0, 3, size=50), _probs(rng, 50, 3))
    assert validate_metrics(metrics) == metrics and set(metrics) == {"accuracy", "auc", "f1_macro", "balanced_accuracy"}
