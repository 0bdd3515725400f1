"""Multinomial logistic regression in pure NumPy: a Trainer that needs no deep-learning framework.

It is the fast path for tests and for tabular sites, and a reference implementation of
the Trainer protocol that shows how little a user has to write.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.client.batching import check_arrays, epoch_batches
from fedloom.client.class_weights import ClassWeight, class_weight_vector
from fedloom.client.softmax_loss import cross_entropy, logit_gradient, softmax
from fedloom.core.classification_metrics import classification_metrics
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import FISHER_PREFIX, NO_TERMS, ClientTerms
from fedloom.core.weights import Weights, check_compatible, copy_weights


def _extra(terms: ClientTerms, name: str, theta: np.ndarray) -> np.ndarray | float:
    """The client-side terms' gradient for one tensor (0 when there is none)."""
    grad = terms.gradient(name, theta)
    return 0.0 if grad is None else grad


class NumpyLogisticTrainer:
    """Softmax regression trained with mini-batch SGD on cross-entropy.

    Weights are ``{"weight": (classes, features), "bias": (classes,)}`` in float32,
    starting at zero (the usual, deterministic initialisation for a convex model).
    ``class_weight`` ("none", "balanced" from this client's labels, or one weight per class)
    weights the training loss (fedloom.client.class_weights); ``evaluate`` reports the plain one.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        *,
        x_eval: np.ndarray | None = None,
        y_eval: np.ndarray | None = None,
        l2: float = 0.0,
        class_weight: ClassWeight = "none",
    ) -> None:
        check_arrays(x, y, "train")
        self.x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        self.y = np.asarray(y, dtype=np.int64)
        self.x_eval = self.x if x_eval is None else np.asarray(x_eval, dtype=np.float32).reshape(len(x_eval), -1)
        self.y_eval = self.y if y_eval is None else np.asarray(y_eval, dtype=np.int64)
        self.num_classes = num_classes
        self.l2 = l2
        self.class_weights = class_weight_vector(class_weight, self.y, num_classes)
        self._weights: Weights = {
            "weight": np.zeros((num_classes, self.x.shape[1]), dtype=np.float32),
            "bias": np.zeros(num_classes, dtype=np.float32),
        }

    def get_weights(self) -> Weights:
        return copy_weights(self._weights)

    def _load(self, weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        check_compatible(weights, self._weights)
        return np.array(weights["weight"], dtype=np.float64), np.array(weights["bias"], dtype=np.float64)

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """Mini-batch SGD; adds the client-side ``terms`` (any algorithm's) to each gradient."""
        w, b = self._load(weights)
        metrics = {"initial_loss": self._loss(w, b, self.x, self.y)} if terms.report_initial_loss else {}
        rng = np.random.default_rng(config.seed)
        onehot = np.eye(self.num_classes)[self.y]
        losses = []
        for _ in range(config.epochs):
            for idx in epoch_batches(len(self.x), config.batch_size, rng):
                xb = self.x[idx].astype(np.float64)
                probs = softmax(xb @ w.T + b)
                losses.append(cross_entropy(probs, self.y[idx], self.class_weights))
                grad = logit_gradient(probs, onehot[idx], self.y[idx], self.class_weights)
                w -= config.lr * (grad.T @ xb + self.l2 * w + _extra(terms, "weight", w))
                b -= config.lr * (grad.sum(axis=0) + _extra(terms, "bias", b))
        self._weights = {"weight": w.astype(np.float32), "bias": b.astype(np.float32)}
        metrics.update(train_loss=float(np.mean(losses)), local_steps=float(len(losses)))
        fisher = self._fisher(w, b, config.batch_size) if terms.report_fisher else {}
        return FitResult({**self.get_weights(), **fisher}, len(self.x), metrics)

    def _fisher(self, w: np.ndarray, b: np.ndarray, batch_size: int) -> Weights:
        """Diagonal empirical Fisher: the mean squared mini-batch gradient at the trained weights."""
        onehot = np.eye(self.num_classes)[self.y]
        fw, fb, batches = np.zeros_like(w), np.zeros_like(b), 0
        for start in range(0, len(self.x), batch_size):
            xb, yb = self.x[start : start + batch_size].astype(np.float64), self.y[start : start + batch_size]
            grad = logit_gradient(softmax(xb @ w.T + b), onehot[start : start + batch_size], yb, self.class_weights)
            fw += (grad.T @ xb) ** 2
            fb += grad.sum(axis=0) ** 2
            batches += 1
        return {
            FISHER_PREFIX + "weight": (fw / batches).astype(np.float32),
            FISHER_PREFIX + "bias": (fb / batches).astype(np.float32),
        }

    def _loss(self, w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """The training objective (class-weighted when asked) at ``w``, ``b`` on ``x``, ``y``."""
        return cross_entropy(softmax(x.astype(np.float64) @ w.T + b), y, self.class_weights)

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        """The unweighted loss, accuracy and fedloom.core.classification_metrics on the evaluation data."""
        w, b = self._load(weights)
        probs = softmax(self.x_eval.astype(np.float64) @ w.T + b)
        loss = cross_entropy(probs, self.y_eval, None)
        return {"loss": loss, **classification_metrics(self.y_eval, probs), "num_samples": float(len(self.y_eval))}
