"""Asynchronous FL on a simulated clock: stragglers, staleness, and learning."""

import numpy as np
import pytest

from fedloom.algorithms.strategy import ClientSettings
from fedloom.core.errors import ConfigError
from fedloom.sim.async_sim import AsyncSettings, _AsyncState, simulate_async
from fedloom.sim.clock import ClientSpeeds, training_seconds
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task, simulate_config


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


def test_fedasync_mixing_by_hand():
    state = _AsyncState({"w": np.zeros(2)}, AsyncSettings("fedasync", mixing=0.5, staleness_exponent=1.0))
    state.arrive({"w": np.full(2, 4.0)}, 10, trained_from=0, client_id="a", metrics={})
    np.testing.assert_allclose(state.weights["w"], 2.0)  # staleness 0: alpha = 0.5
    state.arrive({"w": np.full(2, 8.0)}, 10, trained_from=0, client_id="b", metrics={})
    np.testing.assert_allclose(state.weights["w"], 0.75 * 2.0 + 0.25 * 8.0)  # staleness 1: alpha = 0.5 / 2


def test_fedbuff_uses_the_deployment_buffer():
    state = _AsyncState({"w": np.zeros(1)}, AsyncSettings("fedbuff", buffer_size=2, staleness_exponent=0.0))
    state.arrive({"w": np.array([1.0])}, 10, 0, "a", {})
    assert state.version == 0
    state.arrive({"w": np.array([3.0])}, 30, 0, "b", {})
    assert state.version == 1
    np.testing.assert_allclose(state.weights["w"], [2.5])


@pytest.mark.parametrize("mode", ["fedbuff", "fedasync"])
def test_async_learns_digits_and_reports_simulated_time(mode):
    cfg = SimConfig(dataset="digits", clients=20, lr=0.5, batch_size=16)
    task = build_task(cfg)
    points = simulate_async(
        task.client_fn, 20, task.initial_weights, ClientSettings(lr=0.5, batch_size=16),
        client_sizes=task.client_sizes, total_updates=60, evaluate_fn=task.evaluate_fn,
        settings=AsyncSettings(mode=mode, concurrency=5, buffer_size=5), speeds=ClientSpeeds("pareto", 1.5),
    )  # fmt: skip
    assert points[-1].updates == 60
    times = [p.sim_seconds for p in points]
    assert times == sorted(times) and times[-1] > 0
    assert points[-1].metrics["accuracy"] >= 0.85


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="async mode"):
        AsyncSettings(mode="fedsgd")
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
