"""Class weights for imbalanced labels: ``none``, ``balanced`` from a client's own labels, or explicit.

A site whose table is 95% one class learns to predict that class; weighting each
example's loss by its class's weight makes the rare class count as much as the common
one. ``balanced`` gives class c the weight ``n / (k · count_c)`` (scikit-learn's
``compute_class_weight("balanced")``), with ``n`` the client's training examples and ``k``
the number of classes present in them. Each client computes them from its own labels:
labels never leave the site. A class the client has no example of gets weight 0 (it
never occurs in its loss).

The weighted loss is the weighted mean ``Σ w[y_i] · ce_i / Σ w[y_i]`` (PyTorch's
``cross_entropy(weight=...)``) in every trainer, so only the weights' ratios matter.
They are scaled so that their mean over the client's examples is 1 (balanced weights
already are): the loss keeps the plain loss's scale, DP-SGD's per-example form
(``mean_i w[y_i] ce_i``) its gradient scale, and float32 sums stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedloom.core.errors import ConfigError

__all__ = ["CLASS_WEIGHT_WORDS", "MAX_WEIGHT_RATIO", "ClassWeight", "class_weight_vector", "parse_class_weight"]

#: what ``class_weight`` accepts besides an explicit list of per-class weights
CLASS_WEIGHT_WORDS = ("none", "balanced")
#: the most an explicit list's weights may differ: scaled to mean 1, every weight then lies in
#: [1e-30, 1e30], where float32 neither rounds it to 0 nor overflows a batch's weighted sum
MAX_WEIGHT_RATIO = 1e30

ClassWeight = str | Sequence[float]


def parse_class_weight(value: object) -> str | tuple[float, ...]:
    """``"none"``, ``"balanced"`` or a tuple of positive finite weights, from a word, a list or
    ``"1,19"`` (the ``--class-weight`` flag's form); anything else is refused naming the field."""
    if isinstance(value, str) and value.strip() in CLASS_WEIGHT_WORDS:
        return value.strip()
    items: Sequence[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        items = []
    weights = [_weight(item) for item in items]
    if len(weights) < 2 or any(w is None for w in weights):
        raise ConfigError(
            f"class_weight must be 'none', 'balanced' or one positive weight per class, got {value!r}"
            " (e.g. --class-weight balanced or --class-weight 1,19)"
        )
    checked = tuple(float(w) for w in weights if w is not None)
    if max(checked) / min(checked) > MAX_WEIGHT_RATIO:
        raise ConfigError(
            f"class_weight {value!r}: the weights differ by more than a factor {MAX_WEIGHT_RATIO:g};"
            " only their ratios matter, give ones closer together"
        )
    return checked


def _weight(item: object) -> float | None:
    """A positive finite weight, or None for anything else (a bool is no weight)."""
    if isinstance(item, bool):
        return None
    try:
        number = float(item)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def class_weight_vector(spec: ClassWeight, y: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The per-class weights (float64, ``num_classes`` long) ``spec`` gives for the labels ``y``,
    scaled so that their mean over ``y`` is 1; None for ``"none"`` (the plain, unweighted loss)."""
    parsed = parse_class_weight(spec)
    if parsed == "none":
        return None
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(
            f"class_weight: the training labels run {labels.min()}..{labels.max()} but the model has"
            f" {num_classes} classes (labels must be 0..{num_classes - 1})"
        )
    if parsed == "balanced":
        counts = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
        present = counts > 0
        weights = np.zeros(num_classes, dtype=np.float64)
        weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    elif len(parsed) != num_classes:
        raise ConfigError(
            f"class_weight lists {len(parsed)} weights but the model has {num_classes} classes: give one per class"
        )
    else:
        weights = np.asarray(parsed, dtype=np.float64)
    scaled: np.ndarray = weights / weights[labels].mean()
    return scaled
