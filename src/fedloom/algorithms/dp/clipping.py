"""L2 clipping of a model update: what bounds one client's influence on the aggregate.

The update of a client is its model minus the global model, ``Δ = w − g``, over the
floating-point tensors only (integer tensors such as BatchNorm's ``num_batches_tracked``
are counters, not coordinates, and are not released from clients at all: see
:mod:`fedloom.algorithms.dp.central`). The norm is over all float tensors together, so
scaling keeps the update's direction: ``clip(Δ) = Δ · min(1, C/‖Δ‖₂)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedloom.core.weights import Weights


def float_names(weights: Mapping[str, np.ndarray]) -> list[str]:
    """The names of the floating-point tensors (the ones DP clips, noises and releases)."""
    return [name for name, value in weights.items() if np.asarray(value).dtype.kind == "f"]


def update_delta(weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Weights:
    """``w − g`` in float64 for every floating-point tensor of ``reference`` (0-d kept 0-d)."""
    return {
        name: np.asarray(np.asarray(weights[name], np.float64) - np.asarray(reference[name], np.float64))
        for name in float_names(reference)
    }


def l2_norm(delta: Mapping[str, np.ndarray]) -> float:
    """‖Δ‖₂ over every tensor together, without overflow for huge values (scaled by the largest)."""
    largest = max((float(np.max(np.abs(v))) for v in delta.values() if v.size), default=0.0)
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    total = sum(float(np.sum(np.square(v / largest))) for v in delta.values())
    return largest * math.sqrt(total)


def clip_delta(delta: Mapping[str, np.ndarray], clip_norm: float) -> tuple[Weights, float]:
    """``(Δ · min(1, C/‖Δ‖), ‖Δ‖)``: the clipped update and the norm it had before."""
    norm = l2_norm(delta)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    return {name: np.asarray(np.asarray(v, np.float64) * scale) for name, v in delta.items()}, norm
