"""Robust aggregation rules on crafted inputs whose answers are worked out by hand."""

import numpy as np
import pytest

from fedloom.algorithms import robust
from fedloom.core.errors import ConfigError, ValidationError

# Krum fixture: A..D are honest, E is far away. With f=1 each model scores the sum of its
# n-f-2 = 2 nearest squared distances: A .01+.04=.05, B .01+.05=.06, C .04+.05=.09,
# D .10+.13=.23, E huge -> Krum picks A; Multi-Krum(3) averages A, B, C.
KRUM = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2], [0.3, 0.3], [10.0, 10.0]])


def test_krum_scores_by_hand():
    np.testing.assert_allclose(robust.krum_scores(KRUM, 1)[:4], [0.05, 0.06, 0.09, 0.23])


def test_krum_chooses_the_hand_computed_index():
    assert robust.krum_select(KRUM, 1).tolist() == [0]
    np.testing.assert_array_equal(robust.krum(KRUM, 1), KRUM[0])


def test_multikrum_averages_the_best_m():
    np.testing.assert_allclose(robust.krum(KRUM, 1, m=3), [0.1 / 3, 0.2 / 3])


def test_krum_refuses_too_few_updates():
    with pytest.raises(ConfigError, match="at least 5 updates"):
        robust.krum_scores(KRUM[:4], 1)


def test_median_and_trimmed_mean_on_crafted_columns():
    models = np.array([[1.0, -5.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])
    np.testing.assert_array_equal(robust.coordinate_median(models), [3.0, 1.0])
    # beta 0.2 of 5 drops one value at each end per column: mean(2,3,4)=3, mean(0,1,2)=1
    np.testing.assert_allclose(robust.trimmed_mean(models, 0.2), [3.0, 1.0])
    np.testing.assert_allclose(robust.trimmed_mean(models, 0.0), models.mean(axis=0))


def test_trimmed_mean_refuses_beta_of_half():
    with pytest.raises(ConfigError, match="trim_beta"):
        robust.trimmed_mean(np.ones((4, 1)), 0.5)


def test_geometric_median_of_symmetric_points_is_the_centre():
    square = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) + 5.0
    np.testing.assert_allclose(robust.geometric_median(square), [5.0, 5.0], atol=1e-9)


def test_geometric_median_resists_one_far_outlier():
    points = np.array([[0.0], [1.0], [2.0], [1000.0]])
    # in 1-D the geometric median is any median: between 1 and 2, far from the mean 250.75
    assert 1.0 - 1e-6 <= robust.geometric_median(points)[0] <= 2.0 + 1e-6


def test_geometric_median_respects_weights():
    points = np.array([[0.0], [10.0]])
    assert robust.geometric_median(points, np.array([3.0, 1.0]))[0] == pytest.approx(0.0, abs=1e-5)


def test_bulyan_refuses_n_below_4f_plus_3():
    with pytest.raises(ConfigError, match=r"n >= 4f\+3 = 7"):
        robust.bulyan(np.zeros((6, 2)), 1)


def test_bulyan_drops_the_outlier_and_trims_around_the_median():
    # 1-D: honest 1..6, attacker at 100, f=1. Krum selection takes n-2f=5 models and never
    # the attacker: {1..5} or {2..6}-like sets; then the 5-2=3 values closest to the median
    # are averaged. Iterated Krum here picks 3,4,2,5,1 (lowest scores first) -> median 3,
    # closest three 2,3,4 -> 3.
    models = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [100.0]])
    assert robust.bulyan(models, 1)[0] == pytest.approx(3.0)


def test_norm_bounding_clips_each_update_then_averages():
    models = np.array([[3.0, 4.0], [0.0, 0.5]])  # update norms 5 and 0.5 around a zero centre
    out = robust.norm_bounded_mean(models, np.zeros(2), 1.0, np.array([1.0, 1.0]))
    np.testing.assert_allclose(out, [0.3, 0.65])  # mean of [.6,.8] and [0,.5]


def test_centered_clipping_one_iteration_by_hand():
    models = np.array([[10.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(robust.centered_clip(models, np.zeros(2), 1.0, iterations=1), [0.5, 0.25])


def test_empty_input_is_refused():
    with pytest.raises(ValidationError, match="non-empty"):
        robust.coordinate_median(np.zeros((0, 3)))


# Models at norm 1e7 with a spread of ~1: the exact scores (of the offsets) are
# [28.8539, 1.733, 0.5662, 0.5596, 0.4966], so Krum must pick index 4. The expansion
# ||x||² + ||y||² - 2x·y (the old computation) ranked them by rounding noise and picked 3.
FAR_CENTER = np.array([6e6, 8e6])
FAR_OFFSETS = np.array([[0.98, 2.71], [0.35, -0.74], [-0.11, -1.21], [-0.66, -1.32], [-0.31, -1.67]])


def test_krum_picks_right_when_the_norm_is_1e7_times_the_spread():
    models = FAR_CENTER + FAR_OFFSETS
    assert robust.krum_select(models, 1).tolist() == [4]  # direct differences alone get it right
    assert robust.krum_select(models, 1, center=FAR_CENTER).tolist() == [4]
    np.testing.assert_allclose(
        robust.krum_scores(models, 1, center=FAR_CENTER), [28.8539, 1.733, 0.5662, 0.5596, 0.4966], rtol=1e-6
    )
    np.testing.assert_array_equal(robust.krum(models, 1, center=FAR_CENTER), models[4])


def test_the_krum_aggregator_measures_distances_from_the_global_model():
    from fedloom.algorithms.aggregators import Krum
    from fedloom.core import ClientUpdate

    acc = Krum(byzantine_f=1).start({"w": FAR_CENTER.copy()})
    for i, offset in enumerate(FAR_OFFSETS):
        acc.add(ClientUpdate(str(i), 1, {"w": FAR_CENTER + offset}, 10))
    np.testing.assert_array_equal(acc.result()["w"], FAR_CENTER + FAR_OFFSETS[4])


def test_krum_scores_of_values_near_the_float64_limit_stay_finite():
    # 2, 3 and 4 cluster (2 is their middle); squared, every distance used to be Inf (a tie: index 0)
    models = np.array([[-1e308, 1e308], [1e308, 1e308], [1e308, -1e308], [0.9e308, -1e308], [1e308, -0.9e308]])
    assert robust.krum_select(models, 1).tolist() == [2]
    assert robust.krum_select(models, 1, center=np.array([-1e308, 1e308])).tolist() == [2]


HUGE_ROWS = np.array([[1.7e308, -1.7e308], [1.6e308, -1.7e308], [-1.7e308, 1.7e308], [1.7e308, 1.7e308]])


@pytest.mark.parametrize(
    "rule",
    [
        robust.coordinate_median,
        lambda m: robust.trimmed_mean(m, 0.0),
        robust.geometric_median,
        lambda m: robust.norm_bounded_mean(m, -m[0], 1.0, np.ones(len(m))),
        lambda m: robust.centered_clip(m, -m[0], 1.0),
    ],
)
def test_robust_rules_stay_finite_near_the_float64_limit(rule):
    assert np.isfinite(rule(HUGE_ROWS)).all()


def test_clipping_near_the_limit_still_clips_to_the_radius():
    # the update's norm is 2.4e308 (Inf when squared and summed): clipped to length 2, not to 0
    out = robust.norm_bounded_mean(np.array([[1.7e308, 1.7e308]]), np.zeros(2), 2.0, np.ones(1))
    np.testing.assert_allclose(out, [np.sqrt(2), np.sqrt(2)], rtol=1e-12)
