"""DP runs end to end in simulation: ε stored per round, target-ε stop, noise visibly matters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fedloom
from fedloom.algorithms.dp import PrivacySettings
from fedloom.algorithms.privacy_accountant import WithoutReplacement, gaussian_epsilon
from fedloom.core.errors import ConfigError
from fedloom.server.rounds.asynchronous import AsyncSettings
from fedloom.sim import ParallelExecutor
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")

CLIENTS = 20


@pytest.fixture
def store(tmp_path: Any) -> Any:
    s = SqlStore.open_default(tmp_path / "home")
    yield s
    s.close()


def run(store: Any, rounds: int = 6, privacy: PrivacySettings | None = None, executor: Any = None, **world: Any) -> Any:
    cfg = SimConfig(dataset="digits", model="logreg", clients=CLIENTS, partition="iid", rounds=rounds, seed=0, lr=0.5)
    task = build_task(cfg)
    strategy = fedloom.fedavg(fraction=0.5, epochs=1, batch_size=16, lr=cfg.lr)
    return fedloom.simulate(
        task.client_fn,
        cfg.clients,
        strategy,
        cfg.rounds,
        seed=0,
        initial_weights=task.initial_weights,
        environment=fedloom.Environment(client_sizes=task.client_sizes, **world),
        evaluation=fedloom.Evaluation(task.evaluate_fn),
        recording=fedloom.Recording(store=store, config=cfg.to_dict()),
        observers=[],
        privacy=privacy,
        executor=executor,
    )


def dp(**changes: Any) -> PrivacySettings:
    return PrivacySettings(**{"noise_multiplier": 1.0, "clip_norm": 5.0, "delta": 1e-4, "noise_seed": 1, **changes})


def test_epsilon_of_every_round_is_stored_as_a_server_metric(store: Any) -> None:
    result = run(store, rounds=3, privacy=dp(noise_multiplier=1.1))
    series = store.metric_series(result.run_id, "privacy/epsilon")
    assert [r for r, _ in series] == [1, 2, 3]
    for round_no, value in series:
        assert value == pytest.approx(gaussian_epsilon(1.1 / 2, WithoutReplacement(CLIENTS, 10), round_no, 1e-4))
    for name in ("privacy/delta", "privacy/noise_multiplier", "privacy/clip_norm", "privacy/clipped_fraction"):
        assert len(store.metric_series(result.run_id, name)) == 3, name


def test_small_noise_stays_close_to_fedavg_and_large_noise_does_not(store: Any) -> None:
    plain = run(store).final_metrics["accuracy"]
    quiet = run(store, privacy=dp(noise_multiplier=1e-3, clip_norm=50.0)).final_metrics["accuracy"]
    loud = run(store, privacy=dp(noise_multiplier=50.0, clip_norm=50.0)).final_metrics["accuracy"]
    assert plain > 0.85
    assert abs(quiet - plain) < 0.03
    assert loud < plain - 0.3


def test_run_stops_before_a_round_would_exceed_the_target_epsilon(store: Any) -> None:
    z, delta = 1.0, 1e-4
    per_round = [gaussian_epsilon(z / 2, WithoutReplacement(CLIENTS, 10), r, delta) for r in range(1, 11)]
    target = (per_round[3] + per_round[4]) / 2  # round 4 fits, round 5 would not
    result = run(store, rounds=10, privacy=dp(noise_multiplier=z, delta=delta, target_epsilon=target))
    assert len(result.history) == 4
    assert store.get_run(result.run_id).status == "finished"
    stored = dict(store.metric_series(result.run_id, "privacy/epsilon"))
    assert max(stored) == 4 and stored[4] <= target
    assert dict(store.metric_series(result.run_id, "privacy/target_epsilon_reached")) == {4: 1.0}


@pytest.mark.parametrize("mode", ["client", "local"])
def test_client_side_modes_run_through_the_client_part(store: Any, mode: str) -> None:
    plain = run(store, rounds=2).final_metrics["accuracy"]
    result = run(store, rounds=2, privacy=dp(mode=mode, noise_multiplier=1e-3, clip_norm=50.0))
    assert abs(result.final_metrics["accuracy"] - plain) < 0.03
    epsilon = dict(store.metric_series(result.run_id, "privacy/epsilon"))
    if mode == "local":  # a client's own Gaussian, over the rounds it took part in, worst client
        assert epsilon[2] >= gaussian_epsilon(1e-3 / 2, WithoutReplacement(1, 1), 1, 1e-4)
    else:
        assert epsilon[2] == pytest.approx(gaussian_epsilon(1e-3 / 2, WithoutReplacement(CLIENTS, 10), 2, 1e-4))


def test_client_mode_noise_adds_up_to_the_central_noise(store: Any) -> None:
    quiet = run(store, rounds=1, privacy=dp(mode="client", noise_multiplier=1e-6, clip_norm=50.0))
    noisy = run(store, rounds=1, privacy=dp(mode="client", noise_multiplier=2.0, clip_norm=0.5))
    # the clipped mean moves each coordinate by at most C/m; the noise on the mean is z·C/m per coordinate
    diff = np.concatenate([(noisy.final_weights[k] - quiet.final_weights[k]).ravel() for k in quiet.final_weights])
    assert diff.std() == pytest.approx(2.0 * 0.5 / 10, rel=0.15)


def test_asynchronous_dp_is_refused(store: Any) -> None:
    with pytest.raises(ConfigError, match="asynchronous"):
        run(store, rounds=1, privacy=dp(), asynchronous=AsyncSettings(buffer_size=2))


def test_resuming_a_dp_simulation_is_refused(store: Any) -> None:
    done = run(store, rounds=1, privacy=dp())
    with pytest.raises(ConfigError, match="resuming a DP simulation is not supported yet"):
        cfg = SimConfig(dataset="digits", model="logreg", clients=CLIENTS, rounds=2, seed=0, lr=0.5)
        task = build_task(cfg)
        fedloom.simulate(
            task.client_fn,
            CLIENTS,
            fedloom.fedavg(fraction=0.5, lr=0.5),
            2,
            initial_weights=task.initial_weights,
            recording=fedloom.Recording(store=store, resume=done.run_id),
            observers=[],
            privacy=dp(),
        )


def test_parallel_workers_run_the_client_part_and_the_engine_gets_every_update(store: Any) -> None:
    settings = dp(mode="client", noise_multiplier=1e-3, clip_norm=50.0)
    sequential = run(store, rounds=2, privacy=settings)
    parallel = run(store, rounds=2, privacy=settings, executor=ParallelExecutor(workers=2))
    for name, value in sequential.final_weights.items():  # seeded noise: same clients, same noise
        np.testing.assert_allclose(parallel.final_weights[name], value, rtol=1e-6, atol=1e-9)
    assert store.metric_series(parallel.run_id, "privacy/epsilon") == store.metric_series(
        sequential.run_id, "privacy/epsilon"
    )
