"""Client-side strategy terms in the built-in trainers: FedProx, local steps, initial loss."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedloom.client import NumpyLogisticTrainer
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig

X, Y = load_digits(return_X_y=True)
X = (X[:200] / 16.0).astype(np.float32)
Y = Y[:200]


def distance(a, b):
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))


def fit(trainer, weights, **extra):
    return trainer.fit(weights, FitConfig(round=1, epochs=2, batch_size=20, lr=0.5, seed=3, extra=extra))


def test_fedprox_pulls_the_local_model_toward_the_global_one():
    trainer = NumpyLogisticTrainer(X, Y, 10)
    start = trainer.get_weights()
    moved = [distance(fit(trainer, start, proximal_mu=mu).weights, start) for mu in (0.0, 0.1, 1.0)]
    assert moved[0] > moved[1] > moved[2] > 0


def test_fedprox_mu_zero_is_plain_sgd():
    trainer = NumpyLogisticTrainer(X, Y, 10)
    start = trainer.get_weights()
    a, b = fit(trainer, start).weights, fit(trainer, start, proximal_mu=0.0).weights
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_local_steps_and_initial_loss_are_reported():
    trainer = NumpyLogisticTrainer(X, Y, 10)
    result = fit(trainer, trainer.get_weights(), report_initial_loss=True)
    assert result.metrics["local_steps"] == 2 * 10  # 2 epochs x 200/20 batches
    assert result.metrics["initial_loss"] == pytest.approx(np.log(10))  # zero weights: uniform softmax


def test_a_negative_mu_names_the_flag():
    trainer = NumpyLogisticTrainer(X, Y, 10)
    with pytest.raises(ConfigError, match="--proximal-mu"):
        fit(trainer, trainer.get_weights(), proximal_mu=-1)


def torch_linear_trainer():
    """A seeded 64 -> 10 linear model on the digits slice."""
    torch = pytest.importorskip("torch")
    from fedloom.client.torch_trainer import TorchTrainer

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(64, 10)

    return TorchTrainer(model, X, Y)


@pytest.mark.torch
def test_torch_fedprox_and_metrics():
    trainer = torch_linear_trainer()
    start = trainer.get_weights()
    plain = fit(trainer, start, report_initial_loss=True)
    prox = fit(trainer, start, proximal_mu=1.0)
    assert distance(prox.weights, start) < distance(plain.weights, start)
    assert plain.metrics["local_steps"] == 20
    assert plain.metrics["initial_loss"] > 0


@pytest.mark.torch
def test_torch_fisher_and_curvature():
    from fedloom.client.terms import FISHER_PREFIX, Curvature

    trainer = torch_linear_trainer()
    start = trainer.get_weights()
    plain = fit(trainer, start, report_fisher=True)
    assert {FISHER_PREFIX + "weight", FISHER_PREFIX + "bias"} <= set(plain.weights)
    assert all(np.all(plain.weights[FISHER_PREFIX + k] >= 0) for k in ("weight", "bias"))
    anchor = Curvature({k: np.ones_like(v) for k, v in start.items()}, dict(start), weight=0.5)  # pulls to start
    held = fit(trainer, start, curvature=anchor)
    assert distance(held.weights, start) < distance({k: plain.weights[k] for k in start}, start)


def test_numpy_fisher():
    from fedloom.client.terms import FISHER_PREFIX

    trainer = NumpyLogisticTrainer(X, Y, 10)
    result = fit(trainer, trainer.get_weights(), report_fisher=True)
    assert result.weights[FISHER_PREFIX + "weight"].shape == (10, 64)
    assert result.weights[FISHER_PREFIX + "bias"].min() >= 0
