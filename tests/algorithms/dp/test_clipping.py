"""L2 clipping of an update against the formula clip(Δ) = Δ·min(1, C/‖Δ‖)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedloom.algorithms.dp.clipping import clip_delta, l2_norm, update_delta


def _delta() -> dict[str, np.ndarray]:
    return {"w": np.array([[3.0, 0.0], [0.0, 0.0]]), "b": np.array(4.0)}  # ‖Δ‖ = 5, with a 0-d tensor


def test_norm_is_over_all_tensors_together() -> None:
    assert l2_norm(_delta()) == pytest.approx(5.0)


def test_large_update_is_scaled_to_the_clip_norm_keeping_its_direction() -> None:
    clipped, norm = clip_delta(_delta(), 2.0)
    assert norm == pytest.approx(5.0)
    assert l2_norm(clipped) == pytest.approx(2.0)
    assert clipped["w"][0, 0] == pytest.approx(3.0 * 2.0 / 5.0)
    assert float(clipped["b"]) == pytest.approx(4.0 * 2.0 / 5.0)
    assert clipped["b"].shape == ()


def test_small_update_is_unchanged() -> None:
    clipped, norm = clip_delta(_delta(), 10.0)
    assert norm == pytest.approx(5.0)
    assert np.array_equal(clipped["w"], _delta()["w"]) and float(clipped["b"]) == 4.0


def test_huge_and_tiny_values_do_not_overflow_or_underflow() -> None:
    huge = {"w": np.full(4, 1e300)}
    assert l2_norm(huge) == pytest.approx(2e300)
    clipped, _ = clip_delta(huge, 1.0)
    assert l2_norm(clipped) == pytest.approx(1.0)
    tiny = {"w": np.full(4, 1e-300)}
    assert l2_norm(tiny) == pytest.approx(2e-300)


def test_delta_skips_integer_tensors_and_keeps_float64() -> None:
    reference = {"w": np.zeros(2, np.float32), "n": np.array(3, np.int64), "d": np.zeros((), np.float64)}
    weights = {"w": np.ones(2, np.float32), "n": np.array(9, np.int64), "d": np.array(0.5)}
    delta = update_delta(weights, reference)
    assert set(delta) == {"w", "d"}
    assert delta["d"].shape == () and delta["w"].dtype == np.float64
    assert math.isclose(l2_norm(delta), math.sqrt(2.25))
