"""Server optimisers against scalar re-computations of Reddi et al. (2021), Algorithm 2."""

import math

import numpy as np
import pytest

from fedloom.algorithms.server_opt import AdaptiveServerOpt, FedAvgM, ServerOptState, pseudo_gradient
from fedloom.core.errors import ConfigError

X0 = [1.0, -1.0]
DELTAS = [[0.5, 0.0], [-0.2, 0.4], [0.1, 0.1]]  # aggregate - global in rounds 1..3


def run_three_rounds(opt):
    x = {"w": np.array(X0)}
    state = opt.init(x)
    for delta in DELTAS:
        x, state = opt.step(x, {"w": x["w"] + np.array(delta)}, state)
    return x["w"], state


def scalar_adaptive(variant, lr=0.1, b1=0.9, b2=0.99, tau=1e-3):
    """The paper's update written out per coordinate with plain floats."""
    out, ms, vs = [], [], []
    for i in range(2):
        x, m, v = X0[i], 0.0, tau * tau
        for delta in DELTAS:
            d = delta[i]
            m = b1 * m + (1 - b1) * d
            if variant == "fedadagrad":
                v = v + d * d
            elif variant == "fedadam":
                v = b2 * v + (1 - b2) * d * d
            else:
                v = v - (1 - b2) * d * d * math.copysign(1.0, v - d * d) if v != d * d else v
            x = x + lr * m / (math.sqrt(v) + tau)
        out.append(x)
        ms.append(m)
        vs.append(v)
    return out, ms, vs


@pytest.mark.parametrize("variant", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_state_after_three_rounds_matches_the_paper(variant):
    x, state = run_three_rounds(AdaptiveServerOpt(variant=variant, server_lr=0.1))
    want_x, want_m, want_v = scalar_adaptive(variant)
    np.testing.assert_allclose(x, want_x, rtol=1e-12)
    np.testing.assert_allclose(state.tensors["m/w"], want_m, rtol=1e-12)
    np.testing.assert_allclose(state.tensors["v/w"], want_v, rtol=1e-12)
    assert state.step == 3


def test_fedadam_first_step_by_hand():
    # m = 0.1 * 0.5 = 0.05; v = 0.99e-6 + 0.01 * 0.25 = 0.00250099; x = 1 + 0.1 * 0.05 / (sqrt(v) + 1e-3)
    opt = AdaptiveServerOpt("fedadam", server_lr=0.1)
    x, state = opt.step({"w": np.array(X0)}, {"w": np.array([1.5, -1.0])}, opt.init({"w": np.array(X0)}))
    assert x["w"][0] == pytest.approx(1 + 0.1 * 0.05 / (math.sqrt(0.00250099) + 1e-3), rel=1e-12)
    assert x["w"][1] == -1.0  # no pseudo-gradient, no move
    assert state.tensors["v/w"][1] == pytest.approx(0.99e-6)  # beta2 * tau^2


def test_yogi_second_moment_differs_from_adam_when_gradients_shrink():
    _, adam = run_three_rounds(AdaptiveServerOpt("fedadam", server_lr=0.1))
    _, yogi = run_three_rounds(AdaptiveServerOpt("fedyogi", server_lr=0.1))
    assert not np.allclose(adam.tensors["v/w"], yogi.tensors["v/w"])


def test_fedavgm_momentum_by_hand():
    x, state = run_three_rounds(FedAvgM(server_lr=1.0, server_momentum=0.5))
    # v1 = [.5, 0]; v2 = [.25-.2, .4] = [.05, .4]; v3 = [.025+.1, .2+.1] = [.125, .3]
    np.testing.assert_allclose(state.tensors["v/w"], [0.125, 0.3])
    np.testing.assert_allclose(x, [1.0 + 0.5 + 0.05 + 0.125, -1.0 + 0.0 + 0.4 + 0.3])


def test_fedavgm_without_momentum_at_lr_one_is_fedavg():
    opt = FedAvgM(server_lr=1.0, server_momentum=0.0)
    g = {"w": np.array([0.25, 2.0], np.float32)}
    agg = {"w": np.array([0.5, -1.0], np.float32)}
    out, _ = opt.step(g, agg, opt.init(g))
    np.testing.assert_array_equal(out["w"], agg["w"])
    assert out["w"].dtype == np.float32


def test_integer_tensors_take_the_aggregate_and_have_no_state():
    opt = AdaptiveServerOpt("fedadam")
    g = {"w": np.zeros(2, np.float32), "count": np.array(3, np.int64)}
    state = opt.init(g)
    assert set(state.tensors) == {"m/w", "v/w"}
    out, _ = opt.step(g, {"w": np.ones(2, np.float32), "count": np.array(7, np.int64)}, state)
    assert out["count"] == 7 and out["count"].dtype == np.int64


def test_step_is_pure():
    opt = AdaptiveServerOpt("fedyogi")
    g = {"w": np.array([1.0, 2.0])}
    state = opt.init(g)
    before = {k: v.copy() for k, v in state.tensors.items()}
    opt.step(g, {"w": np.array([2.0, 2.0])}, state)
    assert all(np.array_equal(before[k], state.tensors[k]) for k in before)
    np.testing.assert_array_equal(g["w"], [1.0, 2.0])


def test_pseudo_gradient_is_aggregate_minus_global():
    assert pseudo_gradient({"w": np.array([1.0])}, {"w": np.array([3.0])})["w"][0] == 2.0


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AdaptiveServerOpt("fedadam", server_lr=0), "server_lr"),
        (lambda: AdaptiveServerOpt("fedadam", beta1=1.0), "beta1"),
        (lambda: AdaptiveServerOpt("fedadam", tau=-1), "tau"),
        (lambda: AdaptiveServerOpt("nadam"), "fedadagrad"),
        (lambda: FedAvgM(server_momentum=1.5), "server_momentum"),
    ],
)
def test_bad_settings_name_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_state_is_plain_named_tensors():
    state = FedAvgM().init({"a": np.zeros((2, 2)), "b": np.zeros(3)})
    assert isinstance(state, ServerOptState)
    assert {k: v.shape for k, v in state.tensors.items()} == {"v/a": (2, 2), "v/b": (3,)}
