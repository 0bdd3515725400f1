"""SCAFFOLD: the client control-variate update (option II) and the server update, by hand."""

import numpy as np
import pytest

from fedloom.algorithms.scaffold import CONTROL_PREFIX, Scaffold, with_controls
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core import ClientUpdate
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.reserved import model_part
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config


class MovesToZero:
    """A trainer whose local model always ends at 0 after 4 steps; it records the correction it got."""

    def __init__(self):
        self.corrections = []

    def get_weights(self):
        return {"w": np.zeros(1, np.float32)}

    def fit(self, weights, config, terms):
        self.corrections.append(terms.gradient("w", np.zeros(1)))  # at theta = 0: the offset c - c_i
        return FitResult({"w": np.zeros(1, np.float32)}, 10, {"local_steps": 4.0})

    def evaluate(self, weights, config):
        return {}


def test_client_control_variate_update_by_hand(tmp_path):
    trainer = MovesToZero()
    config = FitConfig(round=1, lr=0.5, extra={"client_parts": ["scaffold"]})
    global_model = {"w": np.ones(1, np.float32), CONTROL_PREFIX + "w": np.full(1, 0.2, np.float32)}
    first = fit_with_state(trainer, global_model, config, LocalContext("7", tmp_path))
    # c_i starts at 0: correction c - c_i = 0.2; c_i+ = 0 - 0.2 + (1 - 0) / (4 * 0.5) = 0.3 = delta
    np.testing.assert_allclose(trainer.corrections[0], [0.2])
    np.testing.assert_allclose(first.weights[CONTROL_PREFIX + "w"], [0.3], rtol=1e-6)
    np.testing.assert_array_equal(first.weights["w"], [0.0])
    fit_with_state(trainer, global_model, config, LocalContext("7", tmp_path))
    # c_i = 0.3 now: correction 0.2 - 0.3 = -0.1; c_i+ = 0.3 - 0.2 + 0.5 = 0.6, delta 0.3
    np.testing.assert_allclose(trainer.corrections[1], [-0.1], rtol=1e-6)


def test_server_update_by_hand():
    reference = with_controls({"w": np.zeros(2, np.float32)})
    reference[CONTROL_PREFIX + "w"] = np.full(2, 0.2, np.float32)
    acc = Scaffold().start_sized(reference, num_clients=20)
    for cid, value, delta, n in (("a", 1.0, 0.3, 10), ("b", 4.0, 0.1, 30)):
        acc.add(
            ClientUpdate(
                cid, 1, {"w": np.full(2, value, np.float32), CONTROL_PREFIX + "w": np.full(2, delta, np.float32)}, n
            )
        )
    out = acc.result()
    np.testing.assert_allclose(out["w"], 3.25)  # (10 * 1 + 30 * 4) / 40
    np.testing.assert_allclose(out[CONTROL_PREFIX + "w"], 0.2 + (2 / 20) * 0.2, rtol=1e-6)  # c + |S|/N * mean(dc)
    assert model_part(out).keys() == {"w"}


def final_accuracy(strategy, executor="sequential"):
    cfg = SimConfig(
        dataset="digits", clients=10, rounds=10, lr=0.5, batch_size=16, partition="shards", fraction=0.5,
        strategy=strategy, executor=executor, workers=2,
    )  # fmt: skip
    result = simulate_config(cfg)
    assert set(result.final_weights) == {"weight", "bias"}  # the control variate is not part of the model
    return result.history[-1].metrics["accuracy"]


def test_scaffold_corrects_drift_on_two_class_shards():
    scaffold, fedavg = final_accuracy("scaffold"), final_accuracy("fedavg")
    assert scaffold >= 0.8
    assert scaffold > fedavg + 0.05  # measured 0.853 vs 0.727


def test_scaffold_with_the_parallel_executor():
    assert final_accuracy("scaffold", "parallel") == pytest.approx(final_accuracy("scaffold"), abs=0.02)


class BatchNormLike:
    """A model with a 0-d float parameter and BatchNorm's 0-d int64 counter; ends at fixed values."""

    def get_weights(self):
        return {
            "w": np.zeros(2, np.float32),
            "scale": np.array(1.0, np.float32),
            "bn.num_batches_tracked": np.array(0, np.int64),
        }

    def fit(self, weights, config, terms=None):
        trained = {
            "w": np.full(2, 0.5, np.float32),
            "scale": np.array(0.25, np.float32),
            "bn.num_batches_tracked": np.array(int(weights["bn.num_batches_tracked"]) + 4, np.int64),
        }
        return FitResult(trained, 10, {"local_steps": 4.0})

    def evaluate(self, weights, config):
        return {}


def test_client_step_keeps_0d_tensors_arrays(tmp_path):
    from fedloom.algorithms.registry import build_strategy
    from fedloom.core.weights import validate_weights

    strategy = build_strategy("scaffold", lr=0.5)
    global_model = strategy.initial_weights(BatchNormLike().get_weights())
    assert CONTROL_PREFIX + "bn.num_batches_tracked" not in global_model  # integer counters get no control
    global_model[CONTROL_PREFIX + "scale"] = np.array(0.2, np.float32)
    config = strategy.client.fit_config(1, "7", seed=0)
    out = fit_with_state(BatchNormLike(), global_model, config, LocalContext("7", tmp_path))
    validate_weights(out.weights, global_model)  # every tensor an array of the global model's shape and dtype
    assert out.weights[CONTROL_PREFIX + "scale"].shape == ()
    # c_i = 0: c_i+ = 0 - 0.2 + (1 - 0.25) / (4 * 0.5) = 0.175 = delta
    np.testing.assert_allclose(out.weights[CONTROL_PREFIX + "scale"], 0.175, rtol=1e-6)
    np.testing.assert_allclose(out.weights[CONTROL_PREFIX + "w"], 0.0 - 0.0 + (0 - 0.5) / 2, rtol=1e-6)
    assert out.weights["bn.num_batches_tracked"] == 4
    again = fit_with_state(
        BatchNormLike(), global_model, config, LocalContext("7", tmp_path)
    )  # c_i read back from its file
    # c_i = 0.175: c_i+ = 0.175 - 0.2 + 0.375 = 0.35, delta 0.175
    np.testing.assert_allclose(again.weights[CONTROL_PREFIX + "scale"], 0.175, rtol=1e-6)
    validate_weights(again.weights, global_model)


def scaffold_round(num_clients, fraction, deltas, threshold=1.0):
    from fedloom.algorithms.registry import build_strategy
    from fedloom.algorithms.strategy import RoundCriteria
    from fedloom.server import RoundEngine

    strategy = build_strategy("scaffold", fraction=fraction, criteria=RoundCriteria(threshold=threshold))
    engine = RoundEngine(strategy, strategy.initial_weights({"w": np.zeros(2, np.float64)}), seed=3)
    engine.register_clients((str(i), None) for i in range(num_clients))
    task = engine.open_round()
    for cid, delta in zip(task.selected, deltas, strict=False):
        weights = {"w": np.ones(2), CONTROL_PREFIX + "w": np.full(2, delta)}
        engine.submit(ClientUpdate(cid, task.round, weights, 10))
    return task, engine.close_round().weights[CONTROL_PREFIX + "w"]


def test_the_control_variate_moves_by_the_drawn_share_not_the_nominal_fraction():
    task, c = scaffold_round(10, 0.25, [0.3, 0.1])
    assert len(task.selected) == 2  # floor(0.25 * 10)
    np.testing.assert_allclose(c, 0.2 * 0.2, rtol=1e-12)  # |S|/N = 2/10 of the mean 0.2 (the fraction gave 0.25)


def test_a_missing_client_does_not_count_towards_the_control_step():
    # 4 of 10 drawn, 2 report: c = (1/N)·Σ Δc_i = (0.3 + 0.1)/10, so c stays the mean of all N c_i
    task, c = scaffold_round(10, 0.4, [0.3, 0.1], threshold=0.5)
    assert len(task.selected) == 4
    np.testing.assert_allclose(c, 0.04, rtol=1e-12)


def test_scaffold_without_the_federation_size_says_how_to_start_it():
    with pytest.raises(ConfigError, match="number of registered clients N"):
        Scaffold().start(with_controls({"w": np.zeros(2, np.float32)}))


@pytest.mark.parametrize("server_opt", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_a_server_optimiser_leaves_the_control_variate_to_scaffolds_rule(server_opt):
    from fedloom.algorithms.registry import build_strategy
    from fedloom.server import RoundEngine

    strategy = build_strategy("scaffold", fraction=1.0, server_opt=server_opt)
    engine = RoundEngine(strategy, strategy.initial_weights({"w": np.zeros(2, np.float64)}))
    engine.register_clients([("a", None), ("b", None)])
    task = engine.open_round()
    for cid, delta in zip(task.selected, (0.3, 0.1), strict=True):
        engine.submit(ClientUpdate(cid, 1, {"w": np.ones(2), CONTROL_PREFIX + "w": np.full(2, delta)}, 10))
    out = engine.close_round().weights
    np.testing.assert_allclose(out[CONTROL_PREFIX + "w"], 0.2, rtol=1e-12)  # (0.3 + 0.1) / N, not a momentum step
    assert not any(CONTROL_PREFIX in k for k in engine.server_opt_state.tensors)
    assert (out["w"] != 1.0).all() or server_opt == "fedavgm"  # the model itself is still optimised
