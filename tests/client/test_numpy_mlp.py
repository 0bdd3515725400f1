"""The NumPy MLP: exact gradients, learns what logistic regression cannot, client-side terms, and the
PyTorch mlp's weight layout (so NumPy and torch sites can share one model)."""

import numpy as np
import pytest
from tabular_cases import gaussian_table

from fedloom.client import EvalConfig, FitConfig, NumpyLogisticTrainer, NumpyMLPTrainer, Trainer
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.client.numpy_mlp import backward, forward
from fedloom.client.softmax_loss import cross_entropy, logit_gradient
from fedloom.core.errors import ConfigError, WeightsMismatchError
from fedloom.core.terms import FISHER_PREFIX, AffineTerm, ClientTerms
from fedloom.core.weights import weights_equal


def xor_table(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label = sign(x0) XOR sign(x1): no linear model beats chance on it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 4)).astype(np.float32)
    return x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)


@pytest.mark.parametrize("class_weights", [None, np.array([1.0, 4.0, 0.5])])
def test_backward_matches_finite_differences(class_weights):
    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(5, 4)), rng.normal(size=5)), (rng.normal(size=(6, 5)), rng.normal(size=6))]
    layers.append((rng.normal(size=(3, 6)), rng.normal(size=3)))
    x, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)

    def loss(ls):
        return cross_entropy(forward(ls, x)[0], y, class_weights)

    probs, inputs = forward(layers, x)
    grads = backward(layers, inputs, logit_gradient(probs, np.eye(3)[y], y, class_weights))
    eps = 1e-6
    for i, (w, b) in enumerate(layers):
        for part, (value, grad) in enumerate(((w, grads[i][0]), (b, grads[i][1]))):
            numeric = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                shifted = [(a.copy(), c.copy()) for a, c in layers]
                shifted[i][part][index] += eps
                up = loss(shifted)
                shifted[i][part][index] -= 2 * eps
                numeric[index] = (up - loss(shifted)) / (2 * eps)
            np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_learns_xor_where_logistic_regression_cannot_and_is_deterministic():
    x, y = xor_table()
    x_test, y_test = xor_table(seed=1)
    config = FitConfig(epochs=60, batch_size=32, lr=0.2, seed=3)
    mlp = NumpyMLPTrainer(x, y, 2, hidden=(32,), x_eval=x_test, y_eval=y_test, seed=0)
    assert isinstance(mlp, Trainer)
    start = mlp.get_weights()
    first, again = mlp.fit(start, config), mlp.fit(start, config)
    assert weights_equal(first.weights, again.weights)
    logreg = NumpyLogisticTrainer(x, y, 2, x_eval=x_test, y_eval=y_test)
    linear = logreg.evaluate(logreg.fit(logreg.get_weights(), config).weights, EvalConfig())
    nonlinear = mlp.evaluate(first.weights, EvalConfig())
    assert nonlinear["accuracy"] > 0.9 and nonlinear["auc"] > 0.95
    assert linear["accuracy"] < 0.65
    assert first.num_samples == 600 and first.metrics["local_steps"] == 60 * 19


def test_he_initialisation_is_seeded_float32_with_zero_biases():
    x, y = gaussian_table([30, 30], features=50)
    a, b = NumpyMLPTrainer(x, y, 2, hidden=(400, 300), seed=5), NumpyMLPTrainer(x, y, 2, hidden=(400, 300), seed=5)
    assert weights_equal(a.get_weights(), b.get_weights())
    assert not weights_equal(a.get_weights(), NumpyMLPTrainer(x, y, 2, hidden=(400, 300), seed=6).get_weights())
    w = a.get_weights()
    assert list(w) == ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]
    assert all(v.dtype == np.float32 for v in w.values()) and not w["3.bias"].any()
    assert w["1.weight"].shape == (400, 50) and w["5.weight"].shape == (2, 300)
    assert float(w["1.weight"].std()) == pytest.approx(np.sqrt(2 / 50), rel=0.02)
    assert float(w["3.weight"].std()) == pytest.approx(np.sqrt(2 / 400), rel=0.02)


def test_fedprox_pulls_toward_the_global_model_and_fisher_and_initial_loss_are_reported():
    x, y = gaussian_table([40, 40, 40], features=6, seed=2)
    trainer = NumpyMLPTrainer(x, y, 3, hidden=(16, 8))
    start = trainer.get_weights()

    def moved(mu):
        config = FitConfig(
            round=1, epochs=3, batch_size=16, lr=0.3, seed=0, extra={"proximal_mu": mu, "client_parts": ["fedprox"]}
        )
        trained = fit_with_state(trainer, start, config, LocalContext("0")).weights
        return np.sqrt(sum(np.sum((trained[k] - start[k]) ** 2) for k in start))

    assert moved(0.0) > moved(0.3) > moved(1.0) > 0
    terms = ClientTerms({"1.bias": AffineTerm(offset=5.0)}, report_fisher=True, report_initial_loss=True)
    result = trainer.fit(start, FitConfig(epochs=1, batch_size=120, lr=0.1, seed=0), terms)
    plain = trainer.fit(start, FitConfig(epochs=1, batch_size=120, lr=0.1, seed=0))
    np.testing.assert_allclose(result.weights["1.bias"], plain.weights["1.bias"] - 0.5, atol=1e-6)
    assert {FISHER_PREFIX + k for k in start} <= set(result.weights)
    assert all((result.weights[FISHER_PREFIX + k] >= 0).all() for k in start)
    assert result.metrics["initial_loss"] == pytest.approx(trainer.evaluate(start, EvalConfig())["loss"])


def test_refuses_bad_hidden_sizes_and_wrong_weights():
    x, y = gaussian_table([5, 5], features=3)
    for hidden in ((), (0,), (4, True)):
        with pytest.raises(ConfigError, match="hidden must be"):
            NumpyMLPTrainer(x, y, 2, hidden=hidden)
    trainer = NumpyMLPTrainer(x, y, 2, hidden=(4,))
    with pytest.raises(WeightsMismatchError):
        trainer.fit({**trainer.get_weights(), "1.weight": np.zeros((4, 2), np.float32)}, FitConfig())


torch = pytest.importorskip("torch")


@pytest.mark.torch
def test_the_pytorch_mlp_and_the_numpy_mlp_share_weights_predictions_and_one_sgd_step():
    from fedloom.client.torch_trainer import TorchTrainer, state_to_weights
    from fedloom.models import mlp

    x, y = gaussian_table([30, 20, 10], features=5, seed=4)
    torch.manual_seed(0)
    module = mlp((5,), 3, hidden=(12, 7))
    numpy_trainer = NumpyMLPTrainer(x, y, 3, hidden=(12, 7), class_weight="balanced")
    start = state_to_weights(module)
    assert {k: (v.shape, v.dtype) for k, v in start.items()} == {
        k: (v.shape, v.dtype) for k, v in numpy_trainer.get_weights().items()
    }
    torch_trainer = TorchTrainer(module, x, y, class_weight="balanced")
    got, want = torch_trainer.evaluate(start, EvalConfig()), numpy_trainer.evaluate(start, EvalConfig())
    assert got.keys() == want.keys()
    for name in got:
        assert got[name] == pytest.approx(want[name], abs=1e-5), name
    config = FitConfig(epochs=1, batch_size=60, lr=0.5, seed=0)
    stepped_torch, stepped_numpy = torch_trainer.fit(start, config).weights, numpy_trainer.fit(start, config).weights
    for name, value in stepped_numpy.items():
        np.testing.assert_allclose(stepped_torch[name], value, atol=1e-5)
