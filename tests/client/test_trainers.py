import numpy as np
import pytest

from fedloom.client import EvalConfig, FitConfig, NumpyLogisticTrainer, Trainer
from fedloom.core import ConfigError, WeightsMismatchError, weights_equal


@pytest.fixture(scope="module")
def digits():
    from fedloom.data import load_digits

    return load_digits()


def test_numpy_trainer_learns_and_is_deterministic(digits):
    tr = digits.train
    t = NumpyLogisticTrainer(tr.x, tr.y, 10, x_eval=digits.test.x, y_eval=digits.test.y)
    assert isinstance(t, Trainer)
    w0 = t.get_weights()
    assert set(w0) == {"weight", "bias"} and w0["weight"].shape == (10, 64)
    before = t.evaluate(w0, EvalConfig())
    assert before["accuracy"] == pytest.approx(np.mean(digits.test.y == 0))  # all-zero model predicts class 0
    cfg = FitConfig(round=1, epochs=10, batch_size=32, lr=0.5, seed=7)
    r1 = t.fit(w0, cfg)
    r2 = t.fit(w0, cfg)
    assert weights_equal(r1.weights, r2.weights)
    assert r1.num_samples == len(tr.y)
    after = t.evaluate(r1.weights, EvalConfig())
    assert after["accuracy"] > 0.9 and after["loss"] < before["loss"]


def test_numpy_trainer_refuses_wrong_weights(digits):
    t = NumpyLogisticTrainer(digits.train.x, digits.train.y, 10)
    with pytest.raises(WeightsMismatchError, match="'weight' has shape"):
        t.fit({"weight": np.zeros((10, 3), np.float32), "bias": np.zeros(10, np.float32)}, FitConfig())
    with pytest.raises(ConfigError, match="labels"):
        NumpyLogisticTrainer(digits.train.x, digits.train.y[:5], 10)


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("batch_size", 0), ("lr", 0.0)])
def test_fit_config_validation_names_field(field, value):
    with pytest.raises(ConfigError, match=field):
        FitConfig(**{field: value})


torch = pytest.importorskip("torch")


def test_torch_trainer_cnn_learns_and_is_deterministic(digits):
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    t = TorchTrainer(model, digits.train.x, digits.train.y, x_eval=digits.test.x, y_eval=digits.test.y)
    w0 = t.get_weights()
    cfg = FitConfig(round=1, epochs=5, batch_size=32, lr=0.3, seed=3)
    r1, r2 = t.fit(w0, cfg), t.fit(w0, cfg)
    assert weights_equal(r1.weights, r2.weights)
    assert set(r1.metrics) == {"train_loss", "train_accuracy", "local_steps"}
    assert t.evaluate(r1.weights, EvalConfig())["accuracy"] > 0.85
    with pytest.raises(WeightsMismatchError):
        t.fit({"nope": np.zeros(1, np.float32)}, cfg)


def test_torch_trainer_accepts_read_only_weights_and_factory(digits):
    from fedloom.client.torch_trainer import TorchTrainer

    t = TorchTrainer(
        lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), digits.train.x, digits.train.y
    )
    w = t.get_weights()
    for a in w.values():
        a.flags.writeable = False
    t.fit(w, FitConfig(lr=0.1))
    with pytest.raises(ConfigError, match="optimizer 'rmsprop'"):
        TorchTrainer(torch.nn.Linear(64, 10), digits.train.x, digits.train.y, optimizer="rmsprop")


def test_plain_sgd_matches_torch_sgd_exactly(digits):
    from fedloom.client.torch_trainer import TorchTrainer

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )

    fast = TorchTrainer(model, digits.train.x, digits.train.y)
    reference = TorchTrainer(model, digits.train.x, digits.train.y, momentum=0.0, weight_decay=1e-30)
    cfg = FitConfig(epochs=2, batch_size=16, lr=0.1, seed=5)
    w0 = fast.get_weights()
    a, b = fast.fit(w0, cfg).weights, reference.fit(w0, cfg).weights
    for name in a:  # weight_decay=1e-30 routes through torch.optim.SGD; the decay term is below float32 resolution
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)
