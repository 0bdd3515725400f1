"""Adaptive clipping (Andrew et al. 2021) against the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedloom.algorithms.dp import adaptive


def test_geometric_update_of_the_clip_norm() -> None:
    # C ← C·exp(−η(b̄ − gamma))
    assert adaptive.next_clip_norm(2.0, 0.9, 0.5, 0.2) == pytest.approx(2.0 * math.exp(-0.2 * 0.4))
    assert adaptive.next_clip_norm(2.0, 0.1, 0.5, 0.2) == pytest.approx(2.0 * math.exp(0.2 * 0.4))
    assert adaptive.next_clip_norm(2.0, 0.5, 0.5, 0.2) == 2.0


def test_update_noise_multiplier_composes_back_to_z() -> None:
    z, sigma_b = 1.0, 5.0
    z_delta = adaptive.update_noise_multiplier(z, sigma_b)
    assert z_delta == pytest.approx((z**-2 - (2 * sigma_b) ** -2) ** -0.5)
    # the two releases compose to the nominal multiplier: z_Δ⁻² + (2σ_b)⁻² = z⁻²
    assert z_delta**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)
    assert z_delta > z


def test_noised_fraction_is_unbiased_with_the_stated_noise() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([adaptive.noised_unclipped_fraction(6, 10, 2.0, rng) for _ in range(20000)])
    assert draws.mean() == pytest.approx(0.6, abs=0.01)
    assert draws.std() == pytest.approx(2.0 / 10, rel=0.03)
