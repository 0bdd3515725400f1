"""What a cohort cannot train is trained per client: one log line says why; failures are reported as today."""

import logging

import numpy as np
import pytest
import torch
from cohort_cases import TOL, client_fn_for, compare, federation, run_rounds
from torch import nn

from fedloom import fedavg
from fedloom.core.errors import ConfigError
from fedloom.models import mlp
from fedloom.sim.cohort import runner
from fedloom.sim.cohort.budget import auto_cohort_size, client_bytes
from fedloom.sim.cohort.probe import CPU_AUTO_MAX_PARAMETERS
from fedloom.sim.cohort.setting import parse_cohort
from fedloom.sim.cohort.stacking import stack_weights, unstack_weights
from fedloom.sim.executor import ClientFailure, ClientUpdate, SequentialExecutor

pytestmark = pytest.mark.torch

SIZES = [12, 7, 20]


class Branchy(nn.Module):
    """Data-dependent control flow: Python branches on a tensor's value, which vmap refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x.flatten(1))
        if h.sum() > 0:
            return h * 2
        return h


class CountsCalls(nn.Module):
    """A 0-d parameter and a 0-d int64 counter bumped in place, like BatchNorm's num_batches_tracked."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)
        self.temperature = nn.Parameter(torch.tensor(1.5))
        self.register_buffer("calls", torch.tensor(0, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls.add_(1)
        return self.linear(x.flatten(1)) * self.temperature


@pytest.fixture(autouse=True)
def fresh_log_memory(monkeypatch):
    """Each reason is logged once per process: start every test as a fresh process would."""
    monkeypatch.setattr(runner, "_said", set())


def cohort_records(caplog):
    return [r for r in caplog.records if r.name == "fedloom.sim.cohort"]


def test_data_dependent_control_flow_falls_back_with_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    _, _, diff = compare(fedavg(1.0, 1, 1, 8, 0.1), Branchy(), federation(SIZES), rounds=2)
    assert diff == 0.0  # trained by the very same per-client code
    records = cohort_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "trained one by one" in message and "vmap cannot batch this model" in message
    assert records[0].levelno == logging.WARNING  # asked for a cohort size explicitly


def test_dropout_is_refused_because_a_cohort_cannot_replay_its_masks(caplog):
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    _, _, diff = compare(fedavg(1.0, 1, 1, 8, 0.1), model, federation(SIZES))
    assert diff == 0.0
    assert any("vmap cannot batch this model" in r.getMessage() for r in cohort_records(caplog))


def test_zero_d_parameter_and_in_place_int_counter_match():
    torch.manual_seed(0)
    _, cohort, diff = compare(fedavg(1.0, 1, 2, 8, 0.1), CountsCalls(), federation(SIZES))
    assert diff <= TOL
    assert [int(u.weights["calls"]) for u in cohort] == [4, 2, 6]  # 2 epochs of 2, 1, 3 batches
    assert cohort[0].weights["temperature"].shape == () and cohort[0].weights["calls"].dtype == np.int64
    assert float(cohort[0].weights["temperature"]) != 1.5


def test_failing_client_is_reported_as_the_sequential_executor_reports_it(caplog):
    """One client's labels are out of range: the batched step fails, every client is retrained alone,
    the bad one fails with the same message as without cohorts, the others are not affected."""
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 3, hidden=(8,))
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    data = federation(SIZES)
    data[1] = (data[1][0], np.full(len(data[1][1]), 7, np.int64))
    make = client_fn_for(model, data)
    strategy = fedavg(1.0, 1, 1, 8, 0.1)
    configs = {str(i): strategy.client.fit_config(1, str(i), 0) for i in range(3)}
    runs = [list(ex.run_round(1, initial, configs, make)) for ex in (SequentialExecutor("off"), SequentialExecutor(3))]
    for per_client, cohort in zip(*runs, strict=True):
        assert type(per_client) is type(cohort)
        if isinstance(per_client, ClientFailure):
            assert cohort.client_id == "1" and cohort.message == per_client.message and "IndexError" in cohort.message
        else:
            for name, value in per_client.weights.items():
                np.testing.assert_allclose(cohort.weights[name], value, rtol=0, atol=TOL)
    assert any("cohort training failed" in r.getMessage() for r in cohort_records(caplog))


def test_client_fn_that_raises_is_one_failure_and_the_cohort_trains_the_rest():
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 3, hidden=(8,))
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    good = client_fn_for(model, federation(SIZES))

    def make(i):
        if i == 2:
            raise OSError("client 2's data file is missing")
        return good(i)

    strategy = fedavg(1.0, 1, 1, 8, 0.1)
    configs = {str(i): strategy.client.fit_config(1, str(i), 0) for i in range(3)}
    reference = list(SequentialExecutor("off").run_round(1, initial, configs, make))
    results = list(SequentialExecutor("auto").run_round(1, initial, configs, make))
    assert [type(r) for r in results] == [ClientUpdate, ClientUpdate, ClientFailure]
    assert results[2].message == reference[2].message == "OSError: client 2's data file is missing"


def test_numpy_trainer_is_trained_per_client_and_said_once_at_info(caplog):
    from fedloom.client.numpy_logreg import NumpyLogisticTrainer

    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    data = federation(SIZES)
    make = lambda i: NumpyLogisticTrainer(*data[i], 3)  # noqa: E731
    initial = make(0).get_weights()
    strategy = fedavg(1.0, 1, 1, 8, 0.1)
    a, _ = run_rounds(strategy, make, 3, initial, SequentialExecutor("off"), rounds=2)
    b, _ = run_rounds(strategy, make, 3, initial, SequentialExecutor("auto"), rounds=2)
    for x, y in zip(a, b, strict=True):
        assert all(np.array_equal(x.weights[k], y.weights[k]) for k in x.weights)
    said = [r for r in cohort_records(caplog) if "NumpyLogisticTrainer" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


@pytest.mark.parametrize("value", ["on", "0", 0, -3, "1.5", True, None])
def test_cohort_setting_is_refused_naming_the_field(value):
    with pytest.raises(ConfigError, match="cohort must be 'auto', 'off' or a positive number"):
        parse_cohort(value)


def test_cohort_setting_accepts_auto_off_and_sizes():
    assert [parse_cohort(v) for v in ("auto", "off", "8", 3)] == ["auto", "off", 8, 3]


def test_auto_size_fits_the_budget():
    model = mlp((1, 8, 8), 3, hidden=(8,))
    sample = torch.zeros(1, 1, 8, 8)
    per_client = client_bytes(model, sample, 32, 100)
    assert per_client > 6 * 4 * sum(p.numel() for p in model.parameters())
    assert auto_cohort_size(model, sample, 32, 100) == (1 << 30) // per_client


def test_stacking_round_trip_keeps_every_value_and_dtype():
    """float64, tiny and huge values, 0-d int64 counters survive stacking bit for bit."""
    model = nn.Linear(2, 2).double()
    model.register_buffer("steps", torch.tensor(0, dtype=torch.int64))
    weights = [
        {"weight": np.array([[1e-300, -1e300], [5e-324, 3.0]]), "bias": np.array([1e-30, -0.0]),
         "steps": np.array(2**62, np.int64)},
        {"weight": np.array([[np.pi, -np.e], [1e200, -1e-200]]), "bias": np.array([7.0, 1e-310]),
         "steps": np.array(3, np.int64)},
    ]  # fmt: skip
    back = unstack_weights(stack_weights(model, weights, torch.device("cpu")))
    for want, got in zip(weights, back, strict=True):
        assert list(got) == ["weight", "bias", "steps"]
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            assert got[k].tobytes() == np.asarray(want[k]).tobytes()  # bitwise, -0.0 and subnormals too


def test_auto_on_cpu_trains_a_large_model_one_by_one_and_says_why(caplog):
    """Above CPU_AUTO_MAX_PARAMETERS, auto keeps per-client training (measured faster on CPU); N forces a cohort."""
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 3, hidden=(800,))  # 54,403 parameters
    assert sum(p.numel() for p in model.parameters()) > CPU_AUTO_MAX_PARAMETERS
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    make = client_fn_for(model, federation(SIZES))
    strategy = fedavg(1.0, 1, 1, 8, 0.1)
    off, _ = run_rounds(strategy, make, 3, initial, SequentialExecutor("off"))
    auto, _ = run_rounds(strategy, make, 3, initial, SequentialExecutor("auto"))
    forced, _ = run_rounds(strategy, make, 3, initial, SequentialExecutor(3))
    assert all(np.array_equal(a.weights[k], b.weights[k]) for a, b in zip(off, auto, strict=True) for k in a.weights)
    said = [r.getMessage() for r in cohort_records(caplog)]
    assert len(said) == 1 and "batches models of up to 50,000 parameters and this one has 54,403" in said[0]
    diffs = [np.abs(a.weights[k] - b.weights[k]).max() for a, b in zip(off, forced, strict=True) for k in a.weights]
    assert 0 < max(diffs) <= TOL  # the forced cohort really is the batched path, and equal within the bound
