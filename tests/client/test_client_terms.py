"""Client-side strategy terms in the built-in trainers: FedProx, local steps, initial loss.

The terms reach the trainers the way they reach every trainer: through the client parts
the config names (fit_with_state) or a ClientTerms object passed to fit."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedloom.client import NumpyLogisticTrainer
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.terms import FISHER_PREFIX, AffineTerm, ClientTerms

X, Y = load_digits(return_X_y=True)
X = (X[:200] / 16.0).astype(np.float32)
Y = Y[:200]


def distance(a, b):
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))


CONFIG = FitConfig(round=1, epochs=2, batch_size=20, lr=0.5, seed=3)


def fit(trainer, weights, **extra):
    """A fit as the simulation and the agent run it; ``proximal_mu`` turns on FedProx's client part."""
    parts = {"client_parts": ["fedprox"]} if "proximal_mu" in extra else {}
    config = FitConfig(round=1, epochs=2, batch_size=20, lr=0.5, seed=3, extra={**extra, **parts})
    return fit_with_state(trainer, weights, config, LocalContext("0"))


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
    trainer = torch_linear_trainer()
    start = trainer.get_weights()
    plain = trainer.fit(start, CONFIG, ClientTerms(report_fisher=True))
    assert {FISHER_PREFIX + "weight", FISHER_PREFIX + "bias"} <= set(plain.weights)
    assert all(np.all(plain.weights[FISHER_PREFIX + k] >= 0) for k in ("weight", "bias"))
    # FedCurv's 2λ(aθ − b) with a = 1, b = start, λ = 0.5: pulls to start
    anchor = ClientTerms({k: AffineTerm(1.0, -np.asarray(v, np.float64)) for k, v in start.items()})
    held = trainer.fit(start, CONFIG, anchor)
    assert distance(held.weights, start) < distance({k: plain.weights[k] for k in start}, start)


def test_numpy_fisher():
    trainer = NumpyLogisticTrainer(X, Y, 10)
    result = trainer.fit(trainer.get_weights(), CONFIG, ClientTerms(report_fisher=True))
    assert result.weights[FISHER_PREFIX + "weight"].shape == (10, 64)
    assert result.weights[FISHER_PREFIX + "bias"].min() >= 0
