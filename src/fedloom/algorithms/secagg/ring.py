"""The ring Z_{2^64} and the quantisation of floats into it.

Masks cancel only under exact arithmetic, so what clients add is integers modulo 2^64
(numpy uint64 wraps around, which is exactly that ring). Floats get there by clipping to
[-c, c] and mapping onto the integers 0 .. L with L = 2^bits - 1:

    q(x) = round((clip(x, -c, c) + c) · L / (2c)),     x̂ = q · 2c / L - c

so for x inside [-c, c] the error |x̂ - x| is at most c / L (half a step) with rounding
to nearest, and below 2c / L (one step, unbiased) with stochastic rounding, plus float64
rounding of a few ulps of c (:func:`error_bound`). A weighted
mean of such values is off by at most the same bound, since it is a convex combination.
A sum of m quantised values (with multiplicity, Σ n_k) is dequantised by subtracting
m·c after scaling; it stays exact as long as L·m < 2^64, which the settings enforce.
"""

from __future__ import annotations

import numpy as np

from fedloom.core.errors import ValidationError


def levels(bits: int) -> int:
    """L = 2^bits - 1, the largest quantised value."""
    return (1 << bits) - 1


def error_bound(clip_range: float, bits: int, stochastic: bool = False) -> float:
    """The largest per-element error of a value inside the clipping range (see the module docstring).

    Besides half a step (one step when stochastic), dequantising in float64 adds rounding
    of a few ulps of ``clip_range``, counted here as ``4·2^-52·c``: it matters only at
    bit widths near 48, where a step itself is that small.
    """
    step = 2.0 * clip_range / levels(bits)
    float_rounding = 4.0 * float(np.finfo(np.float64).eps) * clip_range
    return (step if stochastic else step / 2.0) + float_rounding


def quantise(values: np.ndarray, clip_range: float, bits: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``values`` (float64, flat) as uint64 integers in [0, 2^bits - 1]; ``rng`` rounds stochastically."""
    scale = levels(bits) / (2.0 * clip_range)
    scaled = (np.clip(np.asarray(values, np.float64), -clip_range, clip_range) + clip_range) * scale
    if rng is None:
        rounded = np.rint(scaled)
    else:
        low = np.floor(scaled)
        rounded = low + (rng.random(scaled.shape) < (scaled - low))
    return np.clip(rounded, 0, levels(bits)).astype(np.uint64)


def dequantise_mean(total: np.ndarray, weight: int, clip_range: float, bits: int) -> np.ndarray:
    """The float64 mean of values whose quantised sum (with multiplicity ``weight``) is ``total``."""
    if weight < 1:
        raise ValidationError(f"cannot dequantise a sum of {weight} values")
    scale = 2.0 * clip_range / levels(bits)
    return (total.astype(np.float64) / weight) * scale - clip_range


def add(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left + right`` in Z_{2^64}."""
    total: np.ndarray = np.add(left, right, dtype=np.uint64)
    return total


def subtract(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left - right`` in Z_{2^64}."""
    difference: np.ndarray = np.subtract(left, right, dtype=np.uint64)
    return difference


def from_signed(values: np.ndarray) -> np.ndarray:
    """Signed integers as ring elements (two's complement)."""
    signed: np.ndarray = np.asarray(values, np.int64)
    return signed.view(np.uint64)


def to_signed(words: np.ndarray) -> np.ndarray:
    """Ring elements read back as signed integers (two's complement)."""
    unsigned: np.ndarray = np.asarray(words, np.uint64)
    return unsigned.view(np.int64)
