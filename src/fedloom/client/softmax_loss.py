"""Softmax cross-entropy and its gradient in NumPy, optionally class-weighted: what the NumPy trainers share.

Unweighted, it is the plain mean over the batch; with per-class weights ``w`` it is
the weighted mean ``Σ w[y_i] ce_i / Σ w[y_i]``, the same loss PyTorch's
``cross_entropy(weight=w)`` computes, so a NumPy and a torch trainer given the same
class weights optimise the same objective.
"""

from __future__ import annotations

import numpy as np

#: added inside the log so that a probability rounded to 0 gives a large, finite loss
LOG_FLOOR = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum so that exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


def cross_entropy(probs: np.ndarray, y: np.ndarray, class_weights: np.ndarray | None) -> float:
    """The batch's mean cross-entropy (weighted mean with ``class_weights``)."""
    losses = -np.log(probs[np.arange(len(y)), y] + LOG_FLOOR)
    if class_weights is None:
        return float(losses.mean())
    weights = class_weights[y]
    return float((weights * losses).sum() / weights.sum())


def logit_gradient(
    probs: np.ndarray, onehot: np.ndarray, y: np.ndarray, class_weights: np.ndarray | None
) -> np.ndarray:
    """d loss / d logits of :func:`cross_entropy`: ``(probs - onehot) / n``, or rows scaled by
    ``w[y_i] / Σ w[y]`` with class weights."""
    if class_weights is None:
        grad: np.ndarray = (probs - onehot) / len(y)
        return grad
    weights = class_weights[y]
    scaled: np.ndarray = (probs - onehot) * (weights / weights.sum())[:, None]
    return scaled
