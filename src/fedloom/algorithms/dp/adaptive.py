"""Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially private
learning with adaptive clipping").

The clip norm follows a quantile gamma of the update norms instead of being guessed: each round
the server counts the updates that were not clipped, noises the count (σ_b), and moves the
clip geometrically, ``C ← C · exp(−η (b̄ − gamma))`` with ``b̄`` the noised unclipped fraction.
The count is a second Gaussian release about the same clients, so the noise on the updates
is lowered to keep the round's total privacy at the nominal multiplier z:
``z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)`` (their Theorem 1: the two releases compose to z).
"""

from __future__ import annotations

import math

import numpy as np

from fedloom.core.errors import ConfigError


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """z_Δ: the multiplier left for the updates once the count took its share (σ_b)."""
    rest = noise_multiplier**-2 - (2.0 * count_stddev) ** -2
    if rest <= 0:
        raise ConfigError(f"clip_count_stddev={count_stddev} must be above noise_multiplier/2 = {noise_multiplier / 2}")
    return 1.0 / math.sqrt(rest)


def noised_unclipped_fraction(unclipped: int, denominator: int, count_stddev: float, rng: np.random.Generator) -> float:
    """b̄ = (#unclipped + N(0, σ_b²)) / m, with m the fixed number of clients selected."""
    return (unclipped + float(rng.normal(0.0, count_stddev))) / denominator


def next_clip_norm(clip_norm: float, unclipped_fraction: float, target_quantile: float, clip_lr: float) -> float:
    """The geometric update ``C · exp(−η (b̄ − gamma))``: shrinks when more than gamma went unclipped."""
    return clip_norm * math.exp(-clip_lr * (unclipped_fraction - target_quantile))
