"""Asynchronous FL on a simulated clock: stragglers, staleness, and learning."""

import numpy as np
import pytest

from fedloom.algorithms.strategy import ClientSettings
from fedloom.core.errors import ConfigError
from fedloom.core.update import ClientUpdate
from fedloom.server.rounds import AsyncLifecycle, AsyncSettings
from fedloom.sim.clock import ClientSpeeds, training_seconds
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore


def test_speeds_are_seeded_and_heavy_tailed():
    speeds = ClientSpeeds("pareto", spread=1.5, median_seconds_per_sample=0.01)
    pace = speeds.seconds_per_sample(2000, seed=0)
    np.testing.assert_array_equal(pace, speeds.seconds_per_sample(2000, seed=0))
    assert np.median(pace) == pytest.approx(0.01, rel=0.1)
    assert pace.max() > 10 * np.median(pace)  # stragglers exist
    assert np.all(ClientSpeeds("constant").seconds_per_sample(3, 0) == 0.01)


def test_training_seconds():
    assert training_seconds(0.01, 600, 2, 1.0) == pytest.approx(13.0)


def test_dropout_is_seeded_per_round_and_client():
    speeds = ClientSpeeds(dropout=0.3)
    drops = [speeds.drops(r, "7", seed=1) for r in range(1000)]
    assert 0.25 < np.mean(drops) < 0.35
    assert drops == [speeds.drops(r, "7", seed=1) for r in range(1000)]


def _digits(**changes):
    return SimConfig(
        **{"dataset": "digits", "clients": 20, "rounds": 12, "lr": 0.5, "batch_size": 16, "speeds": "pareto", **changes}
    )


def test_fedasync_mixing_by_hand():
    settings = AsyncSettings.fedasync(mixing=0.5, staleness_exponent=1.0)
    rounds = settings.start({"w": np.zeros(2)}, version=0, max_versions=None)
    lifecycle = AsyncLifecycle(rounds, ClientSettings(), seed=0)
    lifecycle.submit(ClientUpdate("a", 1, {"w": np.full(2, 4.0)}, 10))
    lifecycle.tick(0.0)
    np.testing.assert_allclose(lifecycle.global_weights["w"], 2.0)  # staleness 0: alpha = 0.5
    lifecycle.submit(ClientUpdate("b", 1, {"w": np.full(2, 8.0)}, 10))  # trained from version 0
    lifecycle.tick(0.0)
    np.testing.assert_allclose(lifecycle.global_weights["w"], 0.75 * 2.0 + 0.25 * 8.0)  # staleness 1: alpha = 0.25


def test_fedbuff_makes_a_version_per_full_buffer():
    rounds = AsyncSettings(buffer_size=2, staleness_exponent=0.0).start({"w": np.zeros(1)}, 0, None)
    lifecycle = AsyncLifecycle(rounds, ClientSettings(), seed=0)
    lifecycle.submit(ClientUpdate("a", 1, {"w": np.array([1.0])}, 10))
    assert lifecycle.tick(0.0) == [] and lifecycle.rounds_completed == 0
    lifecycle.submit(ClientUpdate("b", 1, {"w": np.array([3.0])}, 30))
    (event,) = lifecycle.tick(0.0)
    assert event.outcome.round == 1 and lifecycle.task_for("a").round == 2
    np.testing.assert_allclose(lifecycle.global_weights["w"], [2.5])


@pytest.mark.parametrize("mode", ["fedbuff", "fedasync"])
def test_async_learns_digits_and_reports_simulated_time(mode, tmp_path):
    store = SqlStore.open_default(tmp_path)
    versions = 12 if mode == "fedbuff" else 60  # 60 arrivals either way: FedAsync makes a version of each
    result = simulate_config(_digits(mode=mode, rounds=versions, concurrency=5, buffer_size=5), store=store)
    times = [h.metrics["sim_seconds"] for h in result.history]
    assert len(result.history) == versions and times == sorted(times) and times[-1] > 0
    assert result.final_metrics["accuracy"] >= 0.85
    # recorded like any run: one global model per version and every arrival as a local model
    assert [m.round for m in store.list_global_models(result.run_id)] == list(range(1, versions + 1))
    arrivals = store.list_local_models(result.run_id)
    assert len(arrivals) >= sum(h.num_updates for h in result.history)
    assert store.get_run(result.run_id).status == "finished"


def test_async_runs_on_the_parallel_executor_with_the_same_models():
    sequential = simulate_config(_digits(mode="fedbuff", rounds=4, buffer_size=4))
    parallel = simulate_config(_digits(mode="fedbuff", rounds=4, buffer_size=4, executor="parallel", workers=2))
    for name, value in sequential.final_weights.items():
        np.testing.assert_allclose(parallel.final_weights[name], value, rtol=1e-6, atol=1e-7)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="mode"):
        SimConfig(mode="fedsgd")
    with pytest.raises(ConfigError, match="mixing"):
        AsyncSettings(mixing=1.5)
    with pytest.raises(ConfigError, match="dropout"):
        ClientSpeeds(dropout=1.0)


def run_sync(**changes):
    return simulate_config(SimConfig(dataset="digits", clients=10, rounds=4, lr=0.5, batch_size=16, **changes))


def test_sync_rounds_wait_for_the_slowest_client_or_the_deadline():
    free = run_sync(speeds="pareto", speed_spread=1.0)
    clock = [h.metrics["sim_seconds"] for h in free.history]
    assert clock == sorted(clock) and clock[0] > 0
    assert all(h.num_updates == 10 for h in free.history)
    capped = run_sync(speeds="pareto", speed_spread=1.0, deadline_seconds=3.0, threshold=0.3)
    assert capped.history[-1].metrics["sim_seconds"] <= 4 * 3.0 + 1e-9
    assert any(h.num_updates < 10 for h in capped.history)  # stragglers were refused
    assert capped.history[-1].metrics["accuracy"] >= 0.8


def test_dropouts_are_refused_and_counted():
    result = run_sync(dropout=0.4, threshold=0.1)
    assert sum(h.num_updates for h in result.history) < 40
