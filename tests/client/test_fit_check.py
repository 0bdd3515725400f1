"""What a Trainer returns is checked by one function, with the same verdict in simulation and agent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedloom.client.agent import _fit
from fedloom.client.fit_check import checked_fit_result
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.sim.executor import fit_one

WEIGHTS = {"w": np.zeros(3, np.float32), "bn.num_batches_tracked": np.array(0, np.int64)}


class Returns:
    """A trainer whose fit returns ``result`` as it is."""

    def __init__(self, result):
        self.result = result

    def get_weights(self):
        return dict(WEIGHTS)

    def fit(self, weights, config):
        return self.result

    def evaluate(self, weights, config):
        return {}


BAD = [
    (FitResult(WEIGHTS, 10, {"loss": math.nan}), "unusable metrics: .*'loss'"),
    (FitResult(WEIGHTS, 10, {"train loss": 0.5}), "unusable metrics: .*'train loss'"),
    (FitResult(WEIGHTS, True, {}), "num_samples=True; it must be an int >= 1"),
    (FitResult({"w": np.array([np.inf, 0, 0], np.float32)}, 10, {}), "unusable weights"),
    ({"weights": WEIGHTS}, "must return a FitResult, got dict"),
]


@pytest.mark.parametrize(("result", "message"), BAD)
def test_the_simulation_and_the_agent_refuse_the_same_results(result, message):
    config = FitConfig(round=3, epochs=1, batch_size=4, lr=0.1, seed=0)
    with pytest.raises(ClientError, match=f"round 3: trainer.fit {'' if 'FitResult' in message else 'returned '}"):
        fit_one(lambda _i: Returns(result), "0", WEIGHTS, config)
    with pytest.raises(ClientError, match=message):
        _fit(Returns(result), WEIGHTS, config)
    with pytest.raises(ClientError, match=message):
        checked_fit_result(result, 3)


def test_a_good_result_comes_back_clean_with_its_0d_tensors():
    checked = checked_fit_result(FitResult(WEIGHTS, 7, {"loss": 1}), 1)
    assert checked.num_samples == 7 and checked.metrics == {"loss": 1.0}
    assert checked.weights["bn.num_batches_tracked"].shape == ()
