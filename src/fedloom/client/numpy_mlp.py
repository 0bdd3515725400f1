"""A ReLU multi-layer perceptron in pure NumPy: a non-linear tabular model without a deep-learning framework.

Sites that hold tables often cannot install PyTorch; logistic regression is their only
NumPy model and it cannot learn interactions between columns. This trainer is the
small MLP they need, under the same Trainer protocol and client-side terms
(FedProx, SCAFFOLD, FedCurv, FedDyn via ClientTerms) as NumpyLogisticTrainer.

Its weights are laid out as fedloom's PyTorch ``mlp`` (``build_model("mlp", (features,),
classes)``) lays out its state_dict: ``"1.weight"`` (hidden, features), ``"1.bias"``,
``"3.weight"``, ... in float32, so NumPy and PyTorch sites can join one federation.
Computation is float64; He-normal initialisation from ``seed``, zero biases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedloom.client.batching import check_arrays, epoch_batches
from fedloom.client.class_weights import ClassWeight, class_weight_vector
from fedloom.client.softmax_loss import cross_entropy, logit_gradient, softmax
from fedloom.core.classification_metrics import classification_metrics
from fedloom.core.errors import ConfigError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import FISHER_PREFIX, NO_TERMS, ClientTerms
from fedloom.core.weights import Weights, check_compatible, copy_weights

#: the PyTorch mlp's default: McMahan et al.'s "2NN" (two hidden layers of 200)
DEFAULT_HIDDEN = (200, 200)

Layer = tuple[np.ndarray, np.ndarray]  # (weight (out, in), bias (out,)), float64


def layer_names(depth: int) -> list[str]:
    """The state_dict prefixes of PyTorch's ``Sequential(Flatten, Linear, ReLU, ..., Linear)``: 1, 3, 5, ..."""
    return [str(2 * i + 1) for i in range(depth)]


def he_init(sizes: Sequence[int], seed: int) -> Weights:
    """He-normal weights (std sqrt(2 / fan_in), right for ReLU) and zero biases, float32."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, fan_in, fan_out in zip(layer_names(len(sizes) - 1), sizes[:-1], sizes[1:], strict=True):
        weights[f"{name}.weight"] = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        weights[f"{name}.bias"] = np.zeros(fan_out, dtype=np.float32)
    return weights


def forward(layers: Sequence[Layer], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities and every layer's input (what backpropagation needs)."""
    inputs = [x]
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
            inputs.append(h)
    return softmax(h), inputs


def backward(layers: Sequence[Layer], inputs: Sequence[np.ndarray], grad: np.ndarray) -> list[Layer]:
    """Each layer's (d weight, d bias) from the gradient ``grad`` of the loss with respect to the logits."""
    grads: list[Layer] = []
    for i in range(len(layers) - 1, -1, -1):
        grads.append((grad.T @ inputs[i], grad.sum(axis=0)))
        if i > 0:
            grad = (grad @ layers[i][0]) * (inputs[i] > 0)  # ReLU passes the gradient where it was active
    return grads[::-1]


class NumpyMLPTrainer:
    """A softmax MLP with ReLU hidden layers, trained by mini-batch SGD on cross-entropy.

    ``hidden``: one width per hidden layer (at least one layer). ``class_weight``: "none",
    "balanced" (from this client's labels) or one weight per class for the training loss
    (fedloom.client.class_weights); ``evaluate`` reports the unweighted loss. ``l2`` adds
    weight decay to the weight matrices. ``seed`` seeds the initial weights
    (``get_weights``); every client of a run must start from the same global model anyway.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        *,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        x_eval: np.ndarray | None = None,
        y_eval: np.ndarray | None = None,
        l2: float = 0.0,
        class_weight: ClassWeight = "none",
        seed: int = 0,
    ) -> None:
        check_arrays(x, y, "train")
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(f"hidden must be one or more positive layer widths, got {tuple(hidden)!r}")
        self.x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        self.y = np.asarray(y, dtype=np.int64)
        self.x_eval = self.x if x_eval is None else np.asarray(x_eval, dtype=np.float32).reshape(len(x_eval), -1)
        self.y_eval = self.y if y_eval is None else np.asarray(y_eval, dtype=np.int64)
        self.num_classes, self.l2 = num_classes, l2
        self.class_weights = class_weight_vector(class_weight, self.y, num_classes)
        self.names = layer_names(len(hidden) + 1)
        self._weights = he_init([self.x.shape[1], *hidden, num_classes], seed)

    def get_weights(self) -> Weights:
        return copy_weights(self._weights)

    def _load(self, weights: Mapping[str, np.ndarray]) -> list[Layer]:
        check_compatible(weights, self._weights)
        return [
            (np.array(weights[f"{n}.weight"], dtype=np.float64), np.array(weights[f"{n}.bias"], dtype=np.float64))
            for n in self.names
        ]

    def _as_weights(self, layers: Sequence[Layer]) -> Weights:
        out: Weights = {}
        for name, (w, b) in zip(self.names, layers, strict=True):
            out[f"{name}.weight"], out[f"{name}.bias"] = w.astype(np.float32), b.astype(np.float32)
        return out

    def _gradients(self, layers: Sequence[Layer], idx: np.ndarray) -> tuple[float, list[Layer]]:
        """The batch ``idx``'s training loss and its gradient for every layer (before l2 and terms)."""
        probs, inputs = forward(layers, self.x[idx].astype(np.float64))
        y = self.y[idx]
        onehot = np.eye(self.num_classes)[y]
        loss = cross_entropy(probs, y, self.class_weights)
        return loss, backward(layers, inputs, logit_gradient(probs, onehot, y, self.class_weights))

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """Mini-batch SGD; adds the client-side ``terms`` (any algorithm's) to each gradient."""
        layers = self._load(weights)
        metrics = {"initial_loss": self._loss(layers)} if terms.report_initial_loss else {}
        rng = np.random.default_rng(config.seed)
        losses = []
        for _ in range(config.epochs):
            for idx in epoch_batches(len(self.x), config.batch_size, rng):
                loss, grads = self._gradients(layers, idx)
                losses.append(loss)
                layers = [
                    self._step(name, layer, grad, config.lr, terms)
                    for name, layer, grad in zip(self.names, layers, grads, strict=True)
                ]
        self._weights = self._as_weights(layers)
        metrics.update(train_loss=float(np.mean(losses)), local_steps=float(len(losses)))
        fisher = self._fisher(layers, config.batch_size) if terms.report_fisher else {}
        return FitResult({**self.get_weights(), **fisher}, len(self.x), metrics)

    def _step(self, name: str, layer: Layer, grad: Layer, lr: float, terms: ClientTerms) -> Layer:
        """One SGD step of one layer: its loss gradient, weight decay and the client-side terms."""
        (w, b), (gw, gb) = layer, grad
        extra_w, extra_b = terms.gradient(f"{name}.weight", w), terms.gradient(f"{name}.bias", b)
        w = w - lr * (gw + self.l2 * w + (0.0 if extra_w is None else extra_w))
        b = b - lr * (gb + (0.0 if extra_b is None else extra_b))
        return w, b

    def _fisher(self, layers: Sequence[Layer], batch_size: int) -> Weights:
        """Diagonal empirical Fisher: the mean squared mini-batch gradient at the trained weights."""
        sums = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
        batches = 0
        for start in range(0, len(self.x), batch_size):
            _, grads = self._gradients(layers, np.arange(start, min(start + batch_size, len(self.x))))
            sums = [(sw + gw**2, sb + gb**2) for (sw, sb), (gw, gb) in zip(sums, grads, strict=True)]
            batches += 1
        mean = [(sw / batches, sb / batches) for sw, sb in sums]
        return {FISHER_PREFIX + k: v for k, v in self._as_weights(mean).items()}

    def _loss(self, layers: Sequence[Layer]) -> float:
        """The training objective (class-weighted when asked) on all of this client's training data."""
        probs, _ = forward(layers, self.x.astype(np.float64))
        return cross_entropy(probs, self.y, self.class_weights)

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        """The unweighted loss, accuracy and fedloom.core.classification_metrics on the evaluation data."""
        probs, _ = forward(self._load(weights), self.x_eval.astype(np.float64))
        loss = cross_entropy(probs, self.y_eval, None)
        return {"loss": loss, **classification_metrics(self.y_eval, probs), "num_samples": float(len(self.y_eval))}
