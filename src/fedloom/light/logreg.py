"""Softmax regression trained by mini-batch gradient descent, for light devices (NumPy only).

The model is ``{"weight": (classes, features), "bias": (classes,)}``, the layout of
fedloom's digits examples, so a light device can join a federation of full agents. It
computes in float64 and returns each tensor in the dtype it received. With a batch as
large as the data set every epoch is one full-batch step, which makes a round's result
independent of the shuffling seed: what the edge-equivalence tests rely on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.light.trainer import LightFitConfig, Weights

__all__ = ["LightLogisticTrainer"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


class LightLogisticTrainer:
    """Cross-entropy softmax regression on one device's ``x`` (samples x features) and labels ``y``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int, *, l2: float = 0.0) -> None:
        self.x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.y = np.asarray(y, dtype=np.int64)
        if len(self.x) == 0 or len(self.x) != len(self.y):
            raise ValueError(
                f"x and y must hold the same number (>= 1) of samples, got {len(self.x)} and {len(self.y)}"
            )
        if self.y.min() < 0 or self.y.max() >= num_classes:
            raise ValueError(f"labels must be in [0, {num_classes}), got {self.y.min()}..{self.y.max()}")
        self.num_classes, self.l2 = num_classes, l2

    def fit(self, weights: Weights, config: LightFitConfig) -> tuple[Weights, int, Mapping[str, float]]:
        w = np.array(weights["weight"], dtype=np.float64)
        b = np.array(weights["bias"], dtype=np.float64)
        if w.shape != (self.num_classes, self.x.shape[1]) or b.shape != (self.num_classes,):
            raise ValueError(
                f"the global model is {w.shape} + {b.shape}; this device's data needs "
                f"({self.num_classes}, {self.x.shape[1]}) + ({self.num_classes},)"
            )
        rng = np.random.default_rng(config.seed)
        onehot = np.eye(self.num_classes)[self.y]
        losses = []
        for _ in range(config.epochs):
            order = rng.permutation(len(self.x))
            for start in range(0, len(order), config.batch_size):
                idx = np.sort(order[start : start + config.batch_size])  # sorted: the sum order is the seed's no more
                probs = _softmax(self.x[idx] @ w.T + b)
                losses.append(float(-np.log(probs[np.arange(len(idx)), self.y[idx]] + 1e-12).mean()))
                grad = (probs - onehot[idx]) / len(idx)
                w -= config.lr * (grad.T @ self.x[idx] + self.l2 * w)
                b -= config.lr * grad.sum(axis=0)
        trained = {"weight": w.astype(weights["weight"].dtype), "bias": b.astype(weights["bias"].dtype)}
        return trained, len(self.x), {"train_loss": float(np.mean(losses)), "local_steps": float(len(losses))}
