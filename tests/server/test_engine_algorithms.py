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
