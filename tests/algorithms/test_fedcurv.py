"""FedCurv: the penalty from the other clients' Fisher sums, by hand, and a run that learns."""

import numpy as np

from fedloom.algorithms.fedcurv import FISHER_SUM_PREFIX as U
from fedloom.algorithms.fedcurv import WEIGHTED_SUM_PREFIX as V
from fedloom.algorithms.fedcurv import FedCurv, FedCurvClient, with_curvature
from fedloom.algorithms.units import ClientRound
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core import ClientUpdate
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.terms import FISHER_PREFIX
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config


class Recorder:
    """Ends at w = 0.5 with Fisher 4; records the penalty it was given."""

    def __init__(self):
        self.penalties = []

    def get_weights(self):
        return {"w": np.zeros(1, np.float32)}

    def fit(self, weights, config, terms):
        self.penalties.append(terms.term("w"))
        assert terms.report_fisher is True
        return FitResult({"w": np.full(1, 0.5, np.float32), FISHER_PREFIX + "w": np.full(1, 4.0, np.float32)}, 10, {})

    def evaluate(self, weights, config):
        return {}


def model(u, v):
    return {"w": np.ones(1, np.float32), U + "w": np.full(1, u, np.float32), V + "w": np.full(1, v, np.float32)}


def fedcurv_config(round, **extra):
    return FitConfig(round=round, extra={"client_parts": ["fedcurv"], **extra})


def a_b(term, weight):
    """The penalty's (a, b) back from its gradient 2λ(aθ − b) = scale θ + offset."""
    return term.scale[0] / (2 * weight), -term.offset[0] / (2 * weight)


def test_penalty_uses_the_others_sums_and_subtracts_the_clients_own(tmp_path):
    trainer, here = Recorder(), LocalContext("3", tmp_path)
    out = fit_with_state(trainer, model(2.0, 3.0), fedcurv_config(1, curvature_lambda=0.5), here)
    assert a_b(trainer.penalties[0], 0.5) == (2.0, 3.0)  # nothing of its own yet
    np.testing.assert_allclose(out.weights[U + "w"], [4.0])  # F_i
    np.testing.assert_allclose(out.weights[V + "w"], [2.0])  # F_i * theta_i = 4 * 0.5
    assert FISHER_PREFIX + "w" not in out.weights
    fit_with_state(trainer, model(6.0, 5.0), fedcurv_config(2), here)
    assert a_b(trainer.penalties[1], 1.0) == (2.0, 3.0)  # 6 - 4 and 5 - 2: its own round-1 share removed
    fit_with_state(trainer, model(6.0, 5.0), fedcurv_config(4), here)
    assert a_b(trainer.penalties[2], 1.0)[0] == 6.0  # it missed round 3: the sums hold none of its share


def test_penalty_gradient_by_hand():
    step = ClientRound(
        {"w": np.ones(1)},
        {U + "w": np.array([2.0]), V + "w": np.array([3.0])},
        {},
        fedcurv_config(1, curvature_lambda=0.5),
    )
    terms = FedCurvClient().terms(step)
    np.testing.assert_allclose(terms.gradient("w", np.array([1.0])), [2 * 0.5 * (2 * 1 - 3)])
    assert terms.gradient("other", np.array([1.0])) is None


def test_server_sums_the_fisher_tensors():
    reference = with_curvature({"w": np.zeros(1, np.float32)})
    acc = FedCurv().start(reference)
    acc.add(ClientUpdate("a", 1, {"w": np.full(1, 1.0, np.float32), U + "w": np.full(1, 4.0, np.float32),
                                  V + "w": np.full(1, 2.0, np.float32)}, 10))  # fmt: skip
    acc.add(ClientUpdate("b", 1, {"w": np.full(1, 3.0, np.float32), U + "w": np.full(1, 1.0, np.float32),
                                  V + "w": np.full(1, 3.0, np.float32)}, 30))  # fmt: skip
    out = acc.result()
    np.testing.assert_allclose(out["w"], 2.5)
    np.testing.assert_allclose(out[U + "w"], 5.0)
    np.testing.assert_allclose(out[V + "w"], 5.0)


def test_fedcurv_trains_skewed_digits():
    cfg = SimConfig(
        dataset="digits", clients=10, rounds=10, lr=0.5, batch_size=16, partition="shards", fraction=0.5,
        strategy="fedcurv",
    )  # fmt: skip
    result = simulate_config(cfg)
    assert result.history[-1].metrics["accuracy"] >= 0.7  # measured 0.738 (FedAvg: 0.727)
    assert set(result.final_weights) == {"weight", "bias"}
