"""Sample-level DP-SGD in TorchTrainer (Opacus): clipping, noise, names, accounting, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fedloom.algorithms.dp_sgd_settings import DP_SGD_KEY, DPSGDSettings, dp_sgd_from_extra, with_dp_sgd
from fedloom.algorithms.privacy_accountant import Poisson, gaussian_epsilon
from fedloom.algorithms.registry import build_strategy
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.client.dp_sgd import DELTA_METRIC, EPSILON_METRIC, STEPS_METRIC, LedgerStore
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.torch_trainer import TorchTrainer
from fedloom.core.errors import ClientError, ConfigError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import ClientTerms


class Counted(nn.Module):
    """A non-BatchNorm model with the buffers real models have: a 0-d int64 counter and float64 stats."""

    def __init__(self, d_in: int = 4, d_out: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.register_buffer("seen", torch.tensor(7, dtype=torch.int64))
        self.register_buffer("scale64", torch.full((d_in,), 1e-300, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _data(n: int, d: int = 4, classes: int = 3, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(n, d))).astype(np.float32), rng.integers(0, classes, n)


def _config(z: float, c: float, *, batch: int, lr: float = 1.0, epochs: int = 1, r: int = 1) -> FitConfig:
    extra = {DP_SGD_KEY: DPSGDSettings(z, c, 1e-5).to_wire()}
    return FitConfig(round=r, epochs=epochs, batch_size=batch, lr=lr, seed=3, extra=extra)


def _clipped_sum(model: nn.Module, x: np.ndarray, y: np.ndarray, clip: float) -> dict[str, torch.Tensor]:
    """Σ_i clip_C(grad loss_i), computed one example at a time by plain autograd (no Opacus)."""
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(len(x)):
        model.zero_grad()
        out = model(torch.from_numpy(x[i : i + 1]))
        nn.functional.cross_entropy(out, torch.from_numpy(y[i : i + 1])).backward()
        grads = {k: p.grad.detach().clone() for k, p in params.items()}
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for k in total:
            total[k] += factor * grads[k]
    model.zero_grad()
    return total


def _step_residual(model: nn.Module, z: float, clip: float, n: int, d: int, classes: int) -> tuple[dict, dict, dict]:
    """One DP-SGD step with q = 1 (B = n): (start weights, trained weights, Σ clipped grads)."""
    x, y = _data(n, d, classes, scale=30.0)  # large inputs: every per-example gradient is clipped
    trainer = TorchTrainer(model, x, y)
    start = trainer.get_weights()
    expected_sum = _clipped_sum(model, x, y, clip)
    result = trainer.fit(start, _config(z, clip, batch=n, lr=1.0))
    assert result.metrics["local_steps"] == 1.0
    return start, result.weights, {k: v.numpy() for k, v in expected_sum.items()}


def test_each_example_gradient_is_clipped_to_c_before_averaging():
    torch.manual_seed(0)
    model, clip, n = Counted(), 0.05, 8
    start, trained, clipped = _step_residual(model, 1e-9, clip, n, 4, 3)
    for name in ("fc.weight", "fc.bias"):
        step = start[name] - trained[name]  # lr = 1: the step is the noisy mean gradient
        np.testing.assert_allclose(step, clipped[name] / n, rtol=1e-4, atol=1e-7)
    total = np.sqrt(sum(float((clipped[k] ** 2).sum()) for k in clipped))
    assert total <= n * clip * (1 + 1e-5)  # each of the n clipped gradients has norm <= C


def test_noise_std_is_z_times_c_over_the_expected_batch_size():
    torch.manual_seed(1)
    z, clip, n = 2.0, 0.5, 16
    model = nn.Sequential(nn.Linear(100, 100))
    start, trained, clipped = _step_residual(model, z, clip, n, 100, 100)
    residual = np.concatenate([((start[k] - trained[k]) - clipped[k] / n).ravel() for k in clipped])
    assert residual.size == 10100
    assert abs(residual.mean()) < 4 * z * clip / n / np.sqrt(residual.size)
    assert residual.std() == pytest.approx(z * clip / n, rel=0.05)


def test_the_noise_is_not_drawn_from_the_fit_seed():
    x, y = _data(32)
    torch.manual_seed(0)
    model = Counted()
    trainer = TorchTrainer(model, x, y)
    start = trainer.get_weights()
    config = _config(1.0, 1.0, batch=8, lr=0.1)
    first = trainer.fit(start, config).weights["fc.weight"]
    second = trainer.fit(start, config).weights["fc.weight"]
    assert not np.array_equal(first, second)  # same config and seed, different noise and batches


def test_returned_weights_have_the_global_models_names_dtypes_and_shapes():
    x, y = _data(40)
    trainer = TorchTrainer(Counted(), x, y)
    start = trainer.get_weights()
    trainer.evaluate(start, EvalConfig())  # leaves the shared module in eval mode, as a round's evaluation does
    result = trainer.fit(start, _config(1.0, 1.0, batch=10, lr=0.1, epochs=2))
    assert list(result.weights) == list(start)
    for name, value in start.items():
        assert result.weights[name].dtype == value.dtype and result.weights[name].shape == value.shape, name
    assert result.weights["seen"].shape == () and int(result.weights["seen"]) == 7
    np.testing.assert_array_equal(result.weights["scale64"], start["scale64"])
    assert not np.array_equal(result.weights["fc.weight"], start["fc.weight"])
    assert result.metrics["local_steps"] == 8.0  # ceil(40 / 10) Poisson steps per epoch, 2 epochs
    assert set(result.metrics) == {"local_steps"}  # no loss or accuracy computed without noise
    # the module is unwrapped again: no Opacus hooks or attributes left, plain training still works
    assert all(not hasattr(p, "grad_sample") for p in trainer.model.parameters())
    plain = trainer.fit(start, FitConfig(batch_size=10, lr=0.1))
    assert "train_loss" in plain.metrics and list(plain.weights) == list(start)
    assert trainer.evaluate(result.weights, EvalConfig())["num_samples"] == 40.0


def test_epsilon_after_k_rounds_is_the_accountants_for_all_steps_so_far(tmp_path):
    x, y = _data(50)
    z, batch, delta = 1.1, 10, 1e-5
    epsilons = []
    for r in (1, 2, 3):  # a fresh trainer and context each round, as a new round in a new process
        trainer = TorchTrainer(Counted(), x, y)
        result = fit_with_state(
            trainer, trainer.get_weights(), _config(z, 1.0, batch=batch, r=r), LocalContext("7", tmp_path)
        )
        assert result.metrics[STEPS_METRIC] == 5.0 * r
        assert result.metrics[DELTA_METRIC] == delta
        epsilons.append(result.metrics[EPSILON_METRIC])
    expected = [gaussian_epsilon(z, Poisson(batch / 50), 5 * r, delta) for r in (1, 2, 3)]
    assert epsilons == pytest.approx(expected, rel=1e-12)
    assert epsilons[0] < epsilons[1] < epsilons[2]
    ledger = json.loads((tmp_path / "dp_sgd" / "7.json").read_text())
    assert ledger == {"steps": 15, "noise_multiplier": z, "sample_rate": 0.2}
    assert LedgerStore(tmp_path).load("8").steps == 0  # another client's count is its own


def test_a_changed_setting_is_accounted_at_the_weakest_one(tmp_path):
    x, y = _data(50)
    trainer = TorchTrainer(Counted(), x, y)
    fit_with_state(trainer, trainer.get_weights(), _config(2.0, 1.0, batch=25), LocalContext("0", tmp_path))
    result = fit_with_state(trainer, trainer.get_weights(), _config(1.0, 1.0, batch=10), LocalContext("0", tmp_path))
    assert result.metrics[EPSILON_METRIC] == pytest.approx(gaussian_epsilon(1.0, Poisson(0.5), 2 + 5, 1e-5))


def test_a_corrupt_ledger_is_refused_rather_than_restarted(tmp_path):
    (tmp_path / "dp_sgd").mkdir()
    (tmp_path / "dp_sgd" / "0.json").write_text('{"steps": -3, "noise_multiplier": 1.0, "sample_rate": 0.1}')
    x, y = _data(20)
    trainer = TorchTrainer(Counted(), x, y)
    with pytest.raises(ClientError, match=r"ledger .* is unreadable"):
        fit_with_state(trainer, trainer.get_weights(), _config(1.0, 1.0, batch=5), LocalContext("0", tmp_path))


def test_batchnorm_is_refused_at_the_first_fit_naming_the_fix():
    x, y = _data(20)
    trainer = TorchTrainer(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)), x, y)
    start = trainer.get_weights()
    with pytest.raises(ClientError, match=r"BatchNorm.*GroupNorm.*ModuleValidator\.fix"):
        trainer.fit(start, _config(1.0, 1.0, batch=5))
    np.testing.assert_array_equal(trainer.get_weights()["0.weight"], start["0.weight"])


class _TwoArgTrainer:
    """A user's own Trainer that knows nothing of DP-SGD."""

    def __init__(self) -> None:
        self.fits = 0

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(2, np.float32)}

    def fit(self, weights, config):  # type: ignore[no-untyped-def]
        self.fits += 1
        return FitResult(weights, 1, {"local_steps": 1.0})

    def evaluate(self, weights, config):  # type: ignore[no-untyped-def]
        return {"loss": 0.0}


def test_a_trainer_that_cannot_do_dp_sgd_is_refused_before_it_trains(tmp_path):
    x, y = _data(20)
    numpy_trainer = NumpyLogisticTrainer(x, y, 3)
    with pytest.raises(ClientError, match=r"NumpyLogisticTrainer cannot.*without noise"):
        fit_with_state(
            numpy_trainer, numpy_trainer.get_weights(), _config(1.0, 1.0, batch=5), LocalContext("0", tmp_path)
        )
    user = _TwoArgTrainer()
    with pytest.raises(ClientError, match="_TwoArgTrainer cannot"):
        fit_with_state(user, user.get_weights(), _config(1.0, 1.0, batch=5), LocalContext("0", tmp_path))
    assert user.fits == 0 and not (tmp_path / "dp_sgd").exists()


def test_dp_sgd_needs_the_state_directory_for_its_step_count():
    x, y = _data(20)
    trainer = TorchTrainer(Counted(), x, y)
    with pytest.raises(ClientError, match="state directory"):
        fit_with_state(trainer, trainer.get_weights(), _config(1.0, 1.0, batch=5), LocalContext("0", None))


def test_fisher_or_initial_loss_requests_are_refused_under_dp_sgd():
    x, y = _data(20)
    trainer = TorchTrainer(Counted(), x, y)
    with pytest.raises(ClientError, match="Fisher information or initial loss"):
        trainer.fit(trainer.get_weights(), _config(1.0, 1.0, batch=5), ClientTerms(report_fisher=True))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be > 0.*--dp-sgd-noise"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier must be a finite number"),
        ({"noise_multiplier": True}, "noise_multiplier must be a finite number"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be > 0.*--dp-sgd-clip"),
        ({"max_grad_norm": "1"}, "max_grad_norm must be a finite number"),
        ({"delta": 1.0}, r"delta must be in \(0, 1\).*--dp-sgd-delta"),
        ({"delta": 0}, r"delta must be in \(0, 1\)"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(fields, match):
    values = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5, **fields}
    with pytest.raises(ConfigError, match=match):
        DPSGDSettings(**values)
    with pytest.raises(ConfigError, match=match):  # the client checks what it receives as strictly
        dp_sgd_from_extra({DP_SGD_KEY: values})


def test_wire_settings_with_unknown_or_missing_fields_are_refused():
    with pytest.raises(ConfigError, match=r"unknown \['sigma'\], missing \['delta'\]"):
        dp_sgd_from_extra({DP_SGD_KEY: {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sigma": 2}})
    with pytest.raises(ConfigError, match="must be an object"):
        dp_sgd_from_extra({DP_SGD_KEY: 1.0})
    assert dp_sgd_from_extra({}) is None


def test_the_server_sends_the_settings_to_every_client_and_keeps_client_state():
    strategy = with_dp_sgd(build_strategy("fedavg"), DPSGDSettings(1.3, 0.7, 1e-6))
    config = strategy.client.fit_config(4, "c9", seed=1)
    assert json.loads(json.dumps(dict(config.extra)))[DP_SGD_KEY] == {
        "noise_multiplier": 1.3,
        "max_grad_norm": 0.7,
        "delta": 1e-6,
    }
    assert strategy.keeps_client_state and not build_strategy("fedavg").keeps_client_state


def test_empty_poisson_batches_still_take_a_noisy_step():
    x, y = _data(400)
    trainer = TorchTrainer(Counted(), x, y)
    start = trainer.get_weights()
    result = trainer.fit(start, _config(1.0, 1.0, batch=1, lr=0.1))  # q = 1/400: most batches are empty
    assert result.metrics["local_steps"] == 400.0
    assert np.isfinite(result.weights["fc.weight"]).all()
    assert not np.array_equal(result.weights["fc.bias"], start["fc.bias"])


def test_a_deployed_aggregator_sends_the_same_settings_and_an_agent_accounts_them(tmp_path):
    from fedloom.client.agent_fit import WithSiteState, fit_checked
    from fedloom.server.config import config_from_mapping
    from fedloom.server.run_setup import deployment_strategy

    toml = {"client": {"batch_size": 10, "lr": 0.1, "dp_sgd_noise": 1.1, "dp_sgd_clip": 0.5, "dp_sgd_delta": 1e-6}}
    strategy = deployment_strategy(config_from_mapping(toml))
    wire = json.loads(json.dumps(dict(strategy.client.fit_config(1, "site-a", seed=5).extra)))  # as the task carries it
    assert wire[DP_SGD_KEY] == {"noise_multiplier": 1.1, "max_grad_norm": 0.5, "delta": 1e-6}
    assert strategy.keeps_client_state
    x, y = _data(50)
    site = WithSiteState(TorchTrainer(Counted(), x, y), tmp_path)  # what `fedloom agent` trains through
    config = FitConfig(round=1, batch_size=10, lr=0.1, seed=5, extra=wire)
    _, _, metrics = fit_checked(site, site.get_weights(), config)
    assert metrics[EPSILON_METRIC] == pytest.approx(gaussian_epsilon(1.1, Poisson(0.2), 5, 1e-6), rel=1e-12)
    assert not deployment_strategy(config_from_mapping({})).keeps_client_state


def test_bad_dp_sgd_settings_in_the_aggregator_config_name_the_field():
    from fedloom.server.config import config_from_mapping

    with pytest.raises(ConfigError, match=r"\[client\] dp_sgd max_grad_norm must be > 0"):
        config_from_mapping({"client": {"dp_sgd_noise": 1.0, "dp_sgd_clip": 0.0}})
