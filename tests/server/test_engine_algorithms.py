"""The round engine with a server optimiser and a model filter (issue 5's strategy slots)."""

import numpy as np
import pytest

from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.server_opt import FedAvgM
from fedloom.core import ClientUpdate, RejectedUpdateError
from fedloom.core.errors import ConfigError
from fedloom.server import RoundEngine

INIT = {"w": np.zeros(2, np.float64)}


class Rejections:
    def __init__(self):
        self.rejected = []

    def round_opened(self, round, selected): ...

    def update_accepted(self, report, weights): ...

    def update_rejected(self, round, client_id, code, reason):
        self.rejected.append((client_id, code, reason))

    def round_closed(self, outcome): ...


def engine_for(strategy, **kwargs):
    engine = RoundEngine(strategy, INIT, seed=0, max_rounds=5, **kwargs)
    engine.register_clients([("a", None), ("b", None)])
    return engine


def one_round(engine, values):
    task = engine.open_round()
    for cid, value in zip(task.selected, values, strict=True):
        engine.submit(ClientUpdate(cid, task.round, {"w": np.array(value, np.float64)}, 10))
    return engine.close_round()


def test_fedavgm_moves_the_global_model_with_momentum():
    engine = engine_for(build_strategy("fedavgm", fraction=1.0, params={"server_momentum": 0.5}))
    one_round(engine, [[1.0, 0.0], [1.0, 0.0]])  # delta 1 -> v = 1 -> x = 1
    outcome = one_round(engine, [[2.0, 0.0], [2.0, 0.0]])  # delta 1 -> v = 1.5 -> x = 2.5
    np.testing.assert_allclose(outcome.weights["w"], [2.5, 0.0])
    np.testing.assert_allclose(engine.global_weights["w"], [2.5, 0.0])
    assert engine.server_opt_state.step == 2


def test_server_opt_state_resumes():
    strategy = build_strategy("fedavgm", fraction=1.0, params={"server_momentum": 0.5})
    first = engine_for(strategy)
    one_round(first, [[1.0, 0.0], [1.0, 0.0]])
    resumed = RoundEngine(strategy, first.global_weights, start_round=2, server_opt_state=first.server_opt_state)
    resumed.register_clients([("a", None), ("b", None)])
    outcome = one_round(resumed, [[2.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(outcome.weights["w"], [2.5, 0.0])


def test_a_state_for_another_model_is_refused():
    strategy = build_strategy("fedavgm")
    wrong = FedAvgM().init({"other": np.zeros(3)})
    with pytest.raises(ConfigError, match="does not match"):
        RoundEngine(strategy, INIT, server_opt_state=wrong)


def test_filtered_update_is_rejected_recorded_and_changes_nothing():
    recorder = Rejections()
    engine = engine_for(build_strategy("fedavg", fraction=1.0, params={"filter_max_distance": 1.0}), recorder=recorder)
    task = engine.open_round()
    with pytest.raises(RejectedUpdateError) as err:
        engine.submit(ClientUpdate("a", task.round, {"w": np.array([3.0, 4.0])}, 10))
    assert err.value.code == "filtered"
    assert recorder.rejected == [("a", "filtered", pytest.approx(recorder.rejected[0][2]))]
    assert "5 from the global model" in recorder.rejected[0][2] and "at most 1.0" in recorder.rejected[0][2]
    assert engine.received() == 0
    engine.submit(ClientUpdate("a", task.round, {"w": np.array([0.6, 0.0])}, 10))  # within bounds
    engine.submit(ClientUpdate("b", task.round, {"w": np.array([0.0, 0.2])}, 10))
    np.testing.assert_allclose(engine.close_round().weights["w"], [0.3, 0.1])


def test_cosine_filter():
    engine = engine_for(build_strategy("fedavg", fraction=1.0, params={"filter_min_cosine": 0.5}))
    engine = RoundEngine(engine.strategy, {"w": np.array([1.0, 0.0])})
    engine.register_clients([("a", None)])
    task = engine.open_round()
    with pytest.raises(RejectedUpdateError, match="cosine -1"):
        engine.submit(ClientUpdate("a", task.round, {"w": np.array([-1.0, 0.0])}, 10))


# --- models with BatchNorm buffers and 0-d tensors, through every part the registry builds ---

RESNET_LIKE = {
    "conv.weight": np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 1, 3, 3),
    "bn.weight": np.ones(2, np.float32),
    "bn.bias": np.zeros(2, np.float32),
    "bn.running_mean": np.array([0.1, -0.2], np.float32),
    "bn.running_var": np.array([1.0, 2.0], np.float32),
    "bn.num_batches_tracked": np.array(40, np.int64),
    "temperature": np.array(0.5, np.float32),
    "head": np.arange(6, dtype=np.float64).reshape(3, 2),
}
CLIENTS = [str(i) for i in range(7)]  # enough for Bulyan with f = 1 (n >= 4f + 3)


def trained(global_weights, i):
    """Client i's model: every float tensor moved by 0.01·(i+1), the step counter by 10 + i."""
    out = {}
    for name, value in global_weights.items():
        if value.dtype.kind == "f":
            out[name] = np.array(value + 0.01 * (i + 1), value.dtype)
        else:
            out[name] = np.array(value + 10 + i, value.dtype)
    return out


def close_one_round(strategy, samples=lambda i: 10 * (i + 1)):
    engine = RoundEngine(strategy, strategy.initial_weights(RESNET_LIKE), seed=0)
    engine.register_clients((c, None) for c in CLIENTS)
    task = engine.open_round()
    for cid in task.selected:
        metrics = {"local_steps": 4, "initial_loss": 1.0}
        engine.submit(ClientUpdate(cid, task.round, trained(task.global_weights, int(cid)), samples(int(cid)), metrics))
    return task, engine.close_round()


def every_registry_combination():
    from fedloom.algorithms.registry import AGGREGATORS, SERVER_OPTIMIZERS, STRATEGIES

    combos = [(name, None, None) for name in STRATEGIES]
    combos += [("fedavg", agg, opt) for agg in AGGREGATORS for opt in [None, *SERVER_OPTIMIZERS]]
    return combos


@pytest.mark.parametrize(("name", "aggregator", "server_opt"), every_registry_combination())
def test_batchnorm_and_0d_tensors_survive_every_strategy(name, aggregator, server_opt):
    strategy = build_strategy(name, fraction=1.0, aggregator=aggregator, server_opt=server_opt)
    task, outcome = close_one_round(strategy)
    assert outcome.weights.keys() == task.global_weights.keys()
    for key, value in task.global_weights.items():
        got = outcome.weights[key]
        assert isinstance(got, np.ndarray), f"{key} is a {type(got).__name__}, not an array"
        assert (got.shape, got.dtype) == (value.shape, value.dtype), key


def test_batchnorm_values_by_hand():
    _, mean = close_one_round(build_strategy("fedavg", fraction=1.0))
    n = np.arange(1, 8) * 10.0
    shift = (n * 0.01 * np.arange(1, 8)).sum() / n.sum()  # sample-weighted mean of the moves
    np.testing.assert_allclose(mean.weights["temperature"], 0.5 + shift, rtol=1e-6)
    np.testing.assert_allclose(mean.weights["head"], RESNET_LIKE["head"] + shift, rtol=1e-12)
    counters = 40 + 10 + np.arange(7)
    assert mean.weights["bn.num_batches_tracked"] == np.rint((n * counters).sum() / n.sum())
    _, median = close_one_round(build_strategy("median", fraction=1.0))
    np.testing.assert_allclose(median.weights["temperature"], np.float32(0.5 + 0.04), rtol=1e-6)  # the 4th of 7
    assert median.weights["bn.num_batches_tracked"] == 53
    _, adam = close_one_round(build_strategy("fedadam", fraction=1.0, params={"server_lr": 0.1}))
    # first FedAdam step: m = 0.1·Δ, v = 0.99·τ² + 0.01·Δ², x + η·m/(√v + τ)
    m, v = 0.1 * shift, 0.99 * 1e-6 + 0.01 * shift**2
    np.testing.assert_allclose(adam.weights["head"], RESNET_LIKE["head"] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-9)
    assert adam.weights["bn.num_batches_tracked"] == mean.weights["bn.num_batches_tracked"]


@pytest.mark.parametrize("mixing", [None, 0.6])
def test_batchnorm_and_0d_tensors_survive_async_rounds(mixing):
    from fedloom.server.async_rounds import AsyncRounds

    rounds = AsyncRounds(RESNET_LIKE, version=0, buffer_size=2, staleness_exponent=0.5, mixing=mixing)
    for i in range(2):
        rounds.add(ClientUpdate(str(i), 1, trained(RESNET_LIKE, i), 10))
    version = rounds.result()
    for key, value in RESNET_LIKE.items():
        got = version.weights[key]
        assert isinstance(got, np.ndarray) and (got.shape, got.dtype) == (value.shape, value.dtype), key
    alpha = 1.0 if mixing is None else mixing
    np.testing.assert_allclose(version.weights["temperature"], 0.5 + alpha * 0.015, rtol=1e-6)
    assert version.weights["bn.num_batches_tracked"] == 40 + 10  # rint(50.5) = 50, to even


# --- finite updates never make the aggregate non-finite ---


def three_clients(strategy, initial):
    recorder = Rejections()
    engine = RoundEngine(strategy, initial, recorder=recorder)
    engine.register_clients((c, None) for c in "abc")
    return engine, engine.open_round(), recorder


def test_huge_finite_values_with_huge_sample_counts_still_close_the_round():
    engine, task, _ = three_clients(build_strategy("fedavg", fraction=1.0), {"m": np.zeros(2, np.float64)})
    engine.submit(ClientUpdate("a", task.round, {"m": np.full(2, 1e300)}, 10**9))
    engine.submit(ClientUpdate("b", task.round, {"m": np.full(2, 1e300)}, 10**9))
    engine.submit(ClientUpdate("c", task.round, {"m": np.full(2, 0.0)}, 2 * 10**9))
    np.testing.assert_allclose(engine.close_round().weights["m"], 5e299, rtol=1e-12)


@pytest.mark.parametrize("name", ["fednova", "qfedavg"])
def test_an_update_that_would_overflow_the_sums_is_refused_recorded_and_the_round_closes(name):
    from fedloom.algorithms.strategy import RoundCriteria

    strategy = build_strategy(name, fraction=1.0, lr=0.1, criteria=RoundCriteria(threshold=0.5))
    engine, task, recorder = three_clients(strategy, {"m": np.full(2, -1e308)})
    metrics = {"local_steps": 1.0, "initial_loss": 1.0}
    with pytest.raises(RejectedUpdateError) as err:
        engine.submit(ClientUpdate("a", task.round, {"m": np.full(2, 1e308)}, 10, metrics))  # move of 2e308
    assert err.value.code == "invalid_weights" and engine.received() == 0
    (client, code, reason), *_ = recorder.rejected
    assert (client, code) == ("a", "invalid_weights") and ("'m'" in reason or "denominator" in reason)
    for cid in "bc":
        engine.submit(ClientUpdate(cid, task.round, {"m": np.full(2, -1e308)}, 10, metrics))
    outcome = engine.close_round()
    assert outcome.num_updates == 2 and np.isfinite(outcome.weights["m"]).all()


HUGE_VALUES = [1.7e308, -1.7e308, 1e300, -1e300, 1.7e308, 3.0, -2.0]


def huge_model(i, reference):
    """Client i's model: every float tensor at ±HUGE_VALUES[i], counters at the top of int64."""
    out = {}
    for j, (k, v) in enumerate(reference.items()):
        value = HUGE_VALUES[i] * (1 if j % 2 else -1) if v.dtype.kind == "f" else np.iinfo(v.dtype).max - i
        out[k] = np.full(v.shape, value, v.dtype)
    return out


@pytest.mark.parametrize(("name", "aggregator", "server_opt"), every_registry_combination())
def test_finite_updates_never_make_the_aggregate_non_finite(name, aggregator, server_opt):
    from fedloom.algorithms.strategy import RoundCriteria

    strategy = build_strategy(
        name, fraction=1.0, aggregator=aggregator, server_opt=server_opt, criteria=RoundCriteria(threshold=0.1)
    )
    initial = strategy.initial_weights({"m": np.array([1.7e308, -1.7e308, 0.0]), "n": np.array(7, np.int64)})
    recorder = Rejections()
    engine = RoundEngine(strategy, initial, recorder=recorder)
    engine.register_clients((c, None) for c in CLIENTS)
    task = engine.open_round()
    for i, cid in enumerate(task.selected):
        weights = huge_model(i, initial) if i < 5 else {k: v.copy() for k, v in initial.items()}
        try:
            engine.submit(ClientUpdate(cid, task.round, weights, 10**9, {"local_steps": 1, "initial_loss": 1.0}))
        except RejectedUpdateError as exc:
            assert exc.code == "invalid_weights"  # refused, recorded, nothing changed
    assert engine.received() >= 2  # the unchanged models always pass
    outcome = engine.close_round()
    assert all(np.isfinite(v).all() for v in outcome.weights.values())
