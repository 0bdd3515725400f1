"""FedDyn: the client's dynamic regulariser and state, the server's h and model, by hand; a run that learns."""

import numpy as np
import pytest

from fedloom.algorithms.feddyn import H_PREFIX, FedDyn, with_h
from fedloom.algorithms.registry import build_strategy
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core import ClientUpdate
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitResult
from fedloom.core.weights import validate_weights
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config


class EndsFixed:
    """Ends at fixed weights (a 0-d float and BatchNorm's 0-d int64 counter included); records its terms."""

    def __init__(self):
        self.gradients = []

    def fit(self, weights, config, terms):
        self.gradients.append(
            (terms.gradient("w", np.zeros(2)), terms.gradient("s", np.array(0.0)), terms.gradient("bn.n", np.array(0)))
        )
        trained = {"w": np.array([0.0, 4.0], np.float32), "s": np.array(1.5, np.float32), "bn.n": np.array(7)}
        return FitResult(trained, 10, {"local_steps": 3.0})


def test_client_regulariser_and_state_by_hand(tmp_path):
    strategy = build_strategy("feddyn", params={"feddyn_alpha": 0.1})
    model = {"w": np.array([1.0, 2.0], np.float32), "s": np.array(0.5, np.float32), "bn.n": np.array(3)}
    global_model = strategy.initial_weights(model)
    assert set(global_model) == {"w", "s", "bn.n", H_PREFIX + "w", H_PREFIX + "s"}  # no h for the counter
    config, trainer, here = strategy.client.fit_config(1, "2", seed=0), EndsFixed(), LocalContext("2", tmp_path)
    first = fit_with_state(trainer, global_model, config, here)
    validate_weights(first.weights, global_model)
    # g_i = 0: the extra gradient at θ = 0 is -g_i + α(0 - θ_global) = -0.1 * θ_global
    np.testing.assert_allclose(trainer.gradients[0][0], [-0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(trainer.gradients[0][1], -0.05, rtol=1e-6)
    assert trainer.gradients[0][2] is None
    np.testing.assert_allclose(first.weights[H_PREFIX + "w"], [-1.0, 2.0])  # the drift θ_i - θ_global
    np.testing.assert_allclose(first.weights[H_PREFIX + "s"], 1.0)
    fit_with_state(trainer, global_model, config, here)
    # g_i = 0 - 0.1 * drift = [0.1, -0.2], 0-d: -0.1; at θ = 0: -g_i - 0.1 θ_global
    np.testing.assert_allclose(trainer.gradients[1][0], [-0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(trainer.gradients[1][1], 0.1 - 0.05, rtol=1e-6)


def test_server_h_and_model_by_hand():
    reference = with_h({"w": np.zeros(2, np.float32), "n": np.array(0)})
    reference[H_PREFIX + "w"] = np.array([0.5, -0.5], np.float32)
    acc = FedDyn(alpha=0.1).start_sized(reference, num_clients=4)  # m = 4 clients, 2 in this round
    for cid, w, n, samples in (("a", [1.0, 2.0], 2, 10), ("b", [3.0, 0.0], 5, 30)):
        weights = {"w": np.array(w, np.float32), "n": np.array(n), H_PREFIX + "w": np.array(w, np.float32)}
        acc.add(ClientUpdate(cid, 1, weights, samples))
    out = acc.result()
    # h - α (1/m) Σ (θ_i - θ_prev) = [0.5, -0.5] - 0.1 * [4, 2] / 4
    np.testing.assert_allclose(out[H_PREFIX + "w"], [0.4, -0.55], rtol=1e-6)
    np.testing.assert_allclose(out["w"], [2.0 - 0.4 / 0.1, 1.0 + 0.55 / 0.1], rtol=1e-6)  # plain mean - h/α
    assert isinstance(out["n"], np.ndarray) and out["n"].dtype == np.int64 and out["n"].shape == ()
    assert out["n"] == 4  # rint(3.5)


def test_the_round_engine_hands_m_over():
    from fedloom.server import RoundEngine

    strategy = build_strategy("feddyn", fraction=0.5, params={"feddyn_alpha": 0.5})
    engine = RoundEngine(strategy, strategy.initial_weights({"w": np.zeros(1)}), seed=0)
    engine.register_clients((str(i), None) for i in range(8))  # m = 8, 4 drawn
    task = engine.open_round()
    for cid in task.selected:
        engine.submit(ClientUpdate(cid, 1, {"w": np.ones(1), H_PREFIX + "w": np.ones(1)}, 10))
    out = engine.close_round().weights
    np.testing.assert_allclose(out[H_PREFIX + "w"], -0.5 * 4 / 8)  # h - α (1/m) Σ drift
    np.testing.assert_allclose(out["w"], 1.0 + 0.25 / 0.5)  # mean - h/α
    with pytest.raises(ConfigError, match="number of registered clients"):
        FedDyn().start(strategy.initial_weights({"w": np.zeros(1)}))


def test_alpha_is_a_positive_number_and_only_feddyn_uses_it():
    strategy = build_strategy("feddyn", params={"feddyn_alpha": 0.05})
    assert strategy.client.extra == {"feddyn_alpha": 0.05, "client_parts": ["feddyn"]}
    assert strategy.keeps_client_state
    with pytest.raises(ConfigError, match="--feddyn-alpha"):
        build_strategy("feddyn", params={"feddyn_alpha": 0.0})
    with pytest.raises(ConfigError, match=r"'feddyn_alpha' is not used by strategy 'fedavg'.*aggregator feddyn"):
        build_strategy("fedavg", params={"feddyn_alpha": 0.1})


def final_accuracy(strategy, executor="sequential"):
    cfg = SimConfig(
        dataset="digits", clients=20, rounds=20, lr=0.5, batch_size=16, partition="dirichlet", alpha=0.1,
        fraction=0.5, strategy=strategy, executor=executor, workers=2,
    )  # fmt: skip
    result = simulate_config(cfg)
    assert set(result.final_weights) == {"weight", "bias"}  # h is not part of the model
    return result.history[-1].metrics["accuracy"]


def test_feddyn_beats_fedavg_on_dirichlet_0_1_digits():
    feddyn, fedavg = final_accuracy("feddyn"), final_accuracy("fedavg")
    assert feddyn >= 0.9  # measured 0.927
    assert feddyn > fedavg + 0.05  # FedAvg measured 0.844


def test_feddyn_with_the_parallel_executor():
    assert final_accuracy("feddyn", "parallel") == pytest.approx(final_accuracy("feddyn"), abs=0.02)
