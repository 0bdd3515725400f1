"""Every strategy trains a real federation (digits, 10 clients) through the same engine."""

import pytest

from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config

SERVER_LR = {"fedadam": 0.1, "fedyogi": 0.1, "fedadagrad": 0.3, "fedavgm": 1.0}


def run(strategy, executor="sequential", rounds=8, **params):
    if strategy in SERVER_LR:
        params.setdefault("server_lr", SERVER_LR[strategy])
    cfg = SimConfig(
        dataset="digits", clients=10, rounds=rounds, lr=0.5, batch_size=16, strategy=strategy,
        strategy_params=params, executor=executor, workers=2,
    )  # fmt: skip
    return simulate_config(cfg)


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("fedavgm", {}),
        ("fedadam", {}),
        ("fedyogi", {}),
        ("fedadagrad", {}),
        ("fedprox", {"proximal_mu": 0.01}),
        ("fednova", {}),
        ("qfedavg", {"q": 0.2}),
        ("median", {}),
        ("trimmed_mean", {"trim_beta": 0.1}),
        ("geometric_median", {}),
        ("krum", {"byzantine_f": 2}),
        ("multikrum", {"byzantine_f": 2, "multikrum_m": 5}),
        ("bulyan", {"byzantine_f": 1}),
        ("norm_bounded", {"clip_norm": 5.0}),
        ("centered_clip", {"clip_norm": 5.0}),
    ],
)
def test_strategy_learns_digits(strategy, params):
    accuracy = run(strategy, **params).history[-1].metrics["accuracy"]
    assert accuracy >= 0.85, f"{strategy} reached {accuracy:.3f}"


def test_parallel_executor_sends_every_update_to_a_robust_aggregator():
    sequential = run("median", rounds=3).history[-1].metrics["accuracy"]
    parallel = run("median", executor="parallel", rounds=3).history[-1].metrics["accuracy"]
    assert parallel == pytest.approx(sequential, abs=1e-9)
