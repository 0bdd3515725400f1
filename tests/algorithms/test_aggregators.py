"""Aggregators as the round engine uses them: start(global) -> add(updates) -> result()."""

import numpy as np
import pytest

from fedloom.algorithms import aggregators as agg
from fedloom.core import ClientUpdate
from fedloom.core.errors import NonFiniteError, ValidationError

G = {"w": np.zeros(2, np.float32), "count": np.array(0, np.int64)}


def upd(cid, w, n=100, count=0, **metrics):
    return ClientUpdate(cid, 1, {"w": np.asarray(w, np.float32), "count": np.array(count, np.int64)}, n, metrics)


def run(aggregator, updates, reference=G):
    acc = aggregator.start(reference)
    for u in updates:
        acc.add(u)
    return acc.result()


def test_fednova_weights_for_unequal_local_steps():
    # A: 10 steps to 1.0; B: 1 step to 0.2; equal samples. Normalised directions 0.1 and 0.2,
    # mean 0.15; tau_eff = (10 + 1) / 2 = 5.5 -> 0.825 (FedAvg would give 0.6).
    out = run(agg.FedNova(), [upd("a", [1.0, 0], local_steps=10), upd("b", [0.2, 0], local_steps=1)])
    assert out["w"][0] == pytest.approx(0.825)
    assert out["w"].dtype == np.float32


def test_fednova_with_equal_steps_is_fedavg():
    out = run(agg.FedNova(), [upd("a", [1.0, 2.0], 100, local_steps=4), upd("b", [3.0, 0.0], 300, local_steps=4)])
    np.testing.assert_allclose(out["w"], [2.5, 0.5])


def test_fednova_names_the_missing_metric():
    with pytest.raises(ValidationError, match="local_steps"):
        run(agg.FedNova(), [upd("a", [1.0, 0])])


def test_qfedavg_by_hand():
    # L = 1/lr = 10; w_k = -0.1 -> dw = 10 * (0 - -0.1) = 1; q = 1, F = 2:
    # numerator F^q dw = 2; h = q F^(q-1) |dw|^2 + L F^q = 1 + 20 = 21 -> w = 0 - 2/21
    out = run(agg.QFedAvg(q=1.0, lr=0.1), [upd("a", [-0.1, 0.0], initial_loss=2.0)])
    assert out["w"][0] == pytest.approx(-2 / 21, rel=1e-6)


def test_qfedavg_favours_the_client_with_higher_loss():
    updates = [upd("hi", [1.0, 0.0], initial_loss=4.0), upd("lo", [0.0, 1.0], initial_loss=0.5)]
    fair = run(agg.QFedAvg(q=5.0, lr=0.1), updates)["w"]
    plain = run(agg.QFedAvg(q=0.0, lr=0.1), updates)["w"]
    assert fair[0] / fair[1] > plain[0] / plain[1]


@pytest.mark.parametrize(
    ("aggregator", "expected"),
    [
        (agg.Median(), [2.0, 0.0]),
        (agg.TrimmedMean(trim_beta=0.2), [7 / 3, 0.0]),  # drops 1 and 1e6: mean(2, 2, 3)
        (agg.Krum(byzantine_f=1), [2.0, 0.0]),
    ],
)
def test_robust_aggregators_ignore_one_attacker(aggregator, expected):
    updates = [upd(str(i), [v, 0.0]) for i, v in enumerate([1.0, 2.0, 2.0, 3.0])] + [upd("evil", [1e6, 0.0])]
    out = run(aggregator, updates)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-6)
    assert not aggregator.mergeable


def test_integer_tensors_are_rounded_back():
    out = run(agg.Median(), [upd("a", [0, 0], count=3), upd("b", [0, 0], count=4), upd("c", [0, 0], count=4)])
    assert out["count"] == 4 and out["count"].dtype == np.int64


def test_describe_has_the_parameters():
    assert agg.MultiKrum(byzantine_f=2, multikrum_m=3).describe() == {
        "name": "multikrum",
        "byzantine_f": 2,
        "multikrum_m": 3,
    }


def test_flatten_round_trip():
    w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int32)}
    back = agg.unflatten(agg.flatten(w, list(w)), w)
    assert all(np.array_equal(back[k], w[k]) and back[k].dtype == w[k].dtype for k in w)


BIG = {"m": np.zeros(2, np.float64)}


def big(cid, value, n=1, **metrics):
    return ClientUpdate(cid, 1, {"m": np.full(2, value, np.float64)}, n, metrics)


def test_fednova_weights_huge_values_without_overflow():
    out = run(agg.FedNova(), [big("a", 1e300, 10**9, local_steps=1), big("b", 1e300, 10**9, local_steps=1)], BIG)
    np.testing.assert_allclose(out["m"], 1e300, rtol=1e-12)


@pytest.mark.parametrize(
    ("aggregator", "metrics"),
    [(agg.QFedAvg(q=1.0, lr=0.1), {"initial_loss": 1.0}), (agg.FedNova(), {"local_steps": 1})],
)
def test_an_update_whose_sums_would_overflow_is_refused_and_changes_nothing(aggregator, metrics):
    reference = {"m": np.full(2, -1e308, np.float64)}  # q-FedAvg squares the move; FedNova's move is 2e308
    acc = aggregator.start(reference)
    acc.add(big("ok", -1e308, 10, **metrics))
    before = acc.result()
    with pytest.raises(NonFiniteError, match=r"'.*' contains .* after adding this update"):
        acc.add(big("bad", 1e308, 10, **metrics))
    assert acc.count == 1
    np.testing.assert_array_equal(acc.result()["m"], before["m"])


def test_a_large_counter_difference_does_not_change_krums_pick():
    # floats alone: scores a .05, b .02, c .02, d .05, e huge -> Krum picks b (ties by index)
    values, counts = [0.0, 0.1, 0.2, 0.3, 5.0], [0, 1000, 0, 0, 0]
    updates = [upd(str(i), [v, 0.0], count=c) for i, (v, c) in enumerate(zip(values, counts, strict=True))]
    out = run(agg.Krum(byzantine_f=1), updates)
    np.testing.assert_allclose(out["w"], [0.1, 0.0])  # the counter used to push b away: c was picked
    assert out["count"] == 0 and out["count"].dtype == np.int64  # the round's median counter
    three = run(agg.MultiKrum(byzantine_f=1, multikrum_m=3), updates)
    np.testing.assert_allclose(three["w"], [0.1, 0.0], rtol=1e-6)  # mean of a, b, c (b's counter kept it out)


@pytest.mark.parametrize(
    "aggregator", [agg.NormBounded(clip_norm=1.0), agg.CenteredClip(clip_norm=1.0, clip_iterations=3)]
)
def test_counters_are_not_clipped_and_do_not_shrink_the_float_update(aggregator):
    updates = [upd("a", [0.3, 0.0], count=100), upd("b", [0.5, 0.0], count=102), upd("c", [0.4, 0.0], count=100)]
    out = run(aggregator, updates)
    np.testing.assert_allclose(out["w"], [0.4, 0.0], rtol=1e-6)  # every float move is within the clip radius
    assert out["count"] == 100
