"""Class-weighted losses: the weights, their checks, and what they do on a 95/5 table."""

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight
from tabular_cases import gaussian_table

from fedloom.client import EvalConfig, FitConfig, NumpyLogisticTrainer
from fedloom.client.class_weights import class_weight_vector, parse_class_weight
from fedloom.core.errors import ConfigError

torch = pytest.importorskip("torch")
nn = torch.nn


def imbalanced_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 95/5 binary table, half for training and half (about 100 minority rows) for testing."""
    x, y = gaussian_table([3800, 200], separation=1.5, seed=seed)
    return x[:2000], y[:2000], x[2000:], y[2000:]


def minority_recall(trainer, weights) -> float:
    logits = trainer.x_eval.astype(np.float64) @ weights["weight"].T.astype(np.float64) + weights["bias"]
    return float(np.mean(logits.argmax(axis=1)[trainer.y_eval == 1] == 1))


def test_parse_accepts_the_words_lists_and_the_flag_form():
    assert parse_class_weight("none") == "none" and parse_class_weight(" balanced") == "balanced"
    assert parse_class_weight("1, 19") == (1.0, 19.0)
    assert parse_class_weight([1, 2.5, 3]) == (1.0, 2.5, 3.0)


@pytest.mark.parametrize("bad", ["Balanced", "1", "1,0", "1,-2", "1,nan", "1,inf", "a,b", "", [True, 2.0], 3, None])
def test_parse_refuses_anything_else_naming_the_field_and_the_fix(bad):
    with pytest.raises(ConfigError, match=r"class_weight must be .*--class-weight balanced"):
        parse_class_weight(bad)


@pytest.mark.parametrize("bad", ["1,1e-31", "1e39,1", [1e-300, 1.0, 1e-200]])
def test_weights_further_apart_than_float32_can_hold_are_refused(bad):
    with pytest.raises(ConfigError, match=r"the weights differ by more than a factor 1e\+30"):
        parse_class_weight(bad)


@pytest.mark.torch
@pytest.mark.parametrize("weights", [(1e-29, 1.0), (1.0, 1e29), (1e-300, 3e-300), (1e300, 2e300)])
def test_huge_and_tiny_weights_keep_every_trainers_loss_finite(weights):
    x, y = gaussian_table([30, 10], features=3, seed=8)
    config = FitConfig(epochs=1, batch_size=8, lr=0.1, seed=0)
    from fedloom.client.torch_trainer import TorchTrainer  # torch: imported at the bottom of this module

    trainers = [
        NumpyLogisticTrainer(x, y, 2, class_weight=weights),
        TorchTrainer(nn.Linear(3, 2), x, y, class_weight=weights),
    ]
    for trainer in trainers:
        result = trainer.fit(trainer.get_weights(), config)
        assert np.isfinite(result.metrics["train_loss"]) and all(np.isfinite(v).all() for v in result.weights.values())
        weighted = np.asarray(trainer.class_weights, dtype=np.float64)
        assert np.mean(weighted[y]) == pytest.approx(1.0, rel=1e-6)  # scaled to mean 1 over the examples
        assert weighted[1] / weighted[0] == pytest.approx(weights[1] / weights[0], rel=1e-6)


def test_balanced_is_sklearns_balanced_weights_from_the_clients_own_labels():
    y = np.array([0] * 95 + [1] * 5 + [3] * 20)  # class 2 absent from this client
    got = class_weight_vector("balanced", y, 4)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y)
    np.testing.assert_allclose(got[[0, 1, 3]], expected, rtol=1e-12)
    assert got[2] == 0.0 and got.dtype == np.float64
    assert np.mean(got[y]) == pytest.approx(1.0)  # the weighted loss keeps the plain loss's scale


def test_none_gives_no_weights_and_an_explicit_list_must_have_one_weight_per_class():
    assert class_weight_vector("none", np.array([0, 1]), 2) is None
    np.testing.assert_allclose(class_weight_vector((1, 4), np.array([0, 1]), 2), [0.4, 1.6])  # mean 1 over y
    with pytest.raises(ConfigError, match="lists 3 weights but the model has 2 classes"):
        class_weight_vector("1,2,3", np.array([0, 1]), 2)
    with pytest.raises(ConfigError, match=r"training labels run 0..4 but the model has 3 classes"):
        class_weight_vector("balanced", np.array([0, 4]), 3)


def test_numpy_logreg_balanced_weights_raise_minority_recall_and_balanced_accuracy():
    x, y, x_test, y_test = imbalanced_split()
    config = FitConfig(epochs=20, batch_size=32, lr=0.1, seed=0)
    results = {}
    for spec in ("none", "balanced"):
        trainer = NumpyLogisticTrainer(x, y, 2, x_eval=x_test, y_eval=y_test, class_weight=spec)
        weights = trainer.fit(trainer.get_weights(), config).weights
        results[spec] = (minority_recall(trainer, weights), trainer.evaluate(weights, EvalConfig()))
    (plain_recall, plain), (weighted_recall, weighted) = results["none"], results["balanced"]
    assert plain_recall < 0.6 and weighted_recall > 0.8
    assert weighted["balanced_accuracy"] > plain["balanced_accuracy"] + 0.1
    assert plain["accuracy"] > 0.95 > weighted["accuracy"]  # the price: more majority rows called minority


def test_numpy_mlp_balanced_weights_raise_minority_recall_and_balanced_accuracy():
    from fedloom.client import NumpyMLPTrainer

    x, y, x_test, y_test = imbalanced_split()
    config = FitConfig(epochs=10, batch_size=32, lr=0.05, seed=0)
    metrics, recall = {}, {}
    for spec in ("none", "balanced"):
        trainer = NumpyMLPTrainer(x, y, 2, hidden=(16,), x_eval=x_test[y_test == 1], y_eval=y_test[y_test == 1],
                                  class_weight=spec)  # fmt: skip
        weights = trainer.fit(trainer.get_weights(), config).weights
        recall[spec] = trainer.evaluate(weights, EvalConfig())["accuracy"]  # on minority rows only: the recall
        trainer.x_eval, trainer.y_eval = x_test, y_test
        metrics[spec] = trainer.evaluate(weights, EvalConfig())
    assert recall["none"] < 0.6 and recall["balanced"] > 0.8
    assert metrics["balanced"]["balanced_accuracy"] > metrics["none"]["balanced_accuracy"] + 0.1


def test_numpy_logreg_weighted_step_is_the_weighted_mean_gradient():
    """One full-batch step equals the hand-computed gradient of Σ w[y_i] ce_i / Σ w[y_i]."""
    x, y = gaussian_table([9, 3], features=3, seed=5)
    trainer = NumpyLogisticTrainer(x, y, 2, class_weight=(1.0, 2.0))  # (1, 3) would balance 9/3: bias step 0
    trained = trainer.fit(trainer.get_weights(), FitConfig(epochs=1, batch_size=12, lr=1.0, seed=0)).weights
    sample_weight = np.array([1.0, 2.0])[y]
    residual = (np.full((12, 2), 0.5) - np.eye(2)[y]) * (sample_weight / sample_weight.sum())[:, None]
    np.testing.assert_allclose(trained["weight"], -(residual.T @ x.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(trained["bias"], -residual.sum(axis=0), rtol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize(("model", "options"), [("logreg-torch", {}), ("mlp", {"hidden": (32,)})])
def test_torch_balanced_weights_raise_minority_recall_and_balanced_accuracy(model, options):
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    x, y, x_test, y_test = imbalanced_split()
    config = FitConfig(epochs=4, batch_size=32, lr=0.1, seed=0)
    metrics, recall = {}, {}
    for spec in ("none", "balanced"):
        torch.manual_seed(0)
        module = build_model(model, (8,), 2, **options)
        trainer = TorchTrainer(module, x, y, x_eval=x_test, y_eval=y_test, class_weight=spec)
        weights = trainer.fit(trainer.get_weights(), config).weights
        metrics[spec] = trainer.evaluate(weights, EvalConfig())
        with torch.no_grad():
            pred = trainer.model(torch.from_numpy(x_test[y_test == 1])).argmax(dim=1).numpy()
        recall[spec] = float(np.mean(pred == 1))
    assert recall["none"] < 0.6 and recall["balanced"] > 0.8
    assert metrics["balanced"]["balanced_accuracy"] > metrics["none"]["balanced_accuracy"] + 0.1


@pytest.mark.torch
def test_torch_and_numpy_logreg_take_the_same_weighted_step():
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    x, y = gaussian_table([30, 6, 12], features=4, seed=2)
    numpy_trainer = NumpyLogisticTrainer(x, y, 3, class_weight="balanced")
    start = numpy_trainer.get_weights()
    torch_trainer = TorchTrainer(build_model("logreg-torch", (4,), 3), x, y, class_weight="balanced")
    config = FitConfig(epochs=1, batch_size=48, lr=0.5, seed=0)
    expected = numpy_trainer.fit(start, config)
    got = torch_trainer.fit({"1.weight": start["weight"], "1.bias": start["bias"]}, config)
    np.testing.assert_allclose(got.weights["1.weight"], expected.weights["weight"], atol=1e-6)
    np.testing.assert_allclose(got.weights["1.bias"], expected.weights["bias"], atol=1e-6)
    assert got.metrics["train_loss"] == pytest.approx(expected.metrics["train_loss"], rel=1e-6)
    np.testing.assert_allclose(torch_trainer.class_weights.numpy(), numpy_trainer.class_weights, rtol=1e-6)


@pytest.mark.torch
def test_torch_refuses_class_weights_with_its_own_loss_or_the_wrong_length():
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    x, y = gaussian_table([5, 5], features=4)
    with pytest.raises(ConfigError, match="class_weight weights the built-in cross-entropy"):
        TorchTrainer(build_model("mlp", (4,), 2), x, y, loss=torch.nn.functional.cross_entropy, class_weight="balanced")
    with pytest.raises(ConfigError, match="lists 3 weights but the model has 2 classes"):
        TorchTrainer(build_model("mlp", (4,), 2), x, y, class_weight="1,2,3")


@pytest.mark.torch
def test_torch_evaluate_reports_the_unweighted_loss():
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    x, y = gaussian_table([40, 8], features=4, seed=1)
    torch.manual_seed(0)
    plain = TorchTrainer(build_model("mlp", (4,), 2), x, y)
    weighted = TorchTrainer(plain.model, x, y, class_weight="balanced")
    weights = plain.get_weights()
    assert weighted.evaluate(weights, EvalConfig()) == plain.evaluate(weights, EvalConfig())
    with torch.no_grad():
        out = plain.model(torch.from_numpy(x))
    assert float(weighted.loss_fn(out, torch.from_numpy(y))) != pytest.approx(
        float(plain.loss_fn(out, torch.from_numpy(y)))
    )


@pytest.mark.torch
def test_dp_sgd_weights_each_example_by_its_own_class_only():
    """Under DP-SGD the loss is mean_i w[y_i] ce_i (no Σ w denominator coupling examples): with a clip
    norm no gradient reaches and negligible noise, one full-batch step is that loss's gradient."""
    from fedloom.algorithms.dp_sgd_settings import DP_SGD_KEY, DPSGDSettings
    from fedloom.client.torch_trainer import TorchTrainer

    x, y = gaussian_table([10, 2], features=4, seed=3)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    trainer = TorchTrainer(model, x, y, class_weight=(1.0, 4.0))  # Σ w[y_i] = 18, not n = 12
    start = trainer.get_weights()
    config = FitConfig(
        epochs=1, batch_size=12, lr=1.0, seed=0, extra={DP_SGD_KEY: DPSGDSettings(1e-9, 100.0, 1e-5).to_wire()}
    )
    trained = trainer.fit(start, config).weights
    twin = torch.nn.Linear(4, 2)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    weight = torch.tensor([1.0, 4.0]) / 1.5  # scaled to mean 1 over the labels: (10 · 1 + 2 · 4) / 12
    out, labels = twin(torch.from_numpy(x)), torch.from_numpy(y)
    (torch.nn.functional.cross_entropy(out, labels, reduction="none") * weight[labels]).mean().backward()
    for name, param in twin.named_parameters():
        np.testing.assert_allclose(start[name] - trained[name], param.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.torch
def test_reading_the_number_of_classes_leaves_batchnorm_buffers_and_the_mode_alone():
    from fedloom.client.torch_trainer import TorchTrainer

    x, y = gaussian_table([20, 4, 8], features=4, seed=6)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = TorchTrainer(model, x, y, class_weight="balanced")
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert model.state_dict()["1.num_batches_tracked"].dtype == torch.int64
    assert model.state_dict()["1.num_batches_tracked"].shape == ()
    np.testing.assert_allclose(trainer.class_weights.numpy(), [32 / 60, 32 / 12, 32 / 24], rtol=1e-6)
    result = trainer.fit(trainer.get_weights(), FitConfig(epochs=1, batch_size=8, lr=0.1, seed=0))
    assert int(result.weights["1.num_batches_tracked"]) == 4
