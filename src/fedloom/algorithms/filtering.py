"""Model filtering: refuse a local model that sits too far from the global model.

The reference architecture's aggregator filters local models before aggregation; here a
filtered update is refused by the round engine like any other bad upload (code
``filtered``), so it is recorded with its reason and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError


def _float_names(weights: Mapping[str, np.ndarray]) -> list[str]:
    return [k for k, v in weights.items() if np.asarray(v).dtype.kind == "f"]


def distance_and_cosine(
    weights: Mapping[str, np.ndarray], global_weights: Mapping[str, np.ndarray]
) -> tuple[float, float]:
    """L2 distance between the two models and the cosine of the angle between them (float tensors)."""
    names = _float_names(global_weights)
    local = np.concatenate([np.asarray(weights[k], np.float64).ravel() for k in names])
    center = np.concatenate([np.asarray(global_weights[k], np.float64).ravel() for k in names])
    distance = float(np.linalg.norm(local - center))
    norms = float(np.linalg.norm(local) * np.linalg.norm(center))
    cosine = float(local @ center / norms) if norms > 0 else 1.0
    return distance, cosine


@dataclass(frozen=True)
class ModelFilter:
    """Bounds on a local model: L2 distance to the global model at most ``max_distance``,
    cosine similarity with it at least ``min_cosine``; ``None`` leaves a bound off."""

    max_distance: float | None = None
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        if self.max_distance is not None and not self.max_distance > 0:
            raise ConfigError(f"filter_max_distance must be > 0, got {self.max_distance} (set --filter-max-distance)")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigError(f"filter_min_cosine must be in [-1, 1], got {self.min_cosine} (set --filter-min-cosine)")

    def describe(self) -> dict[str, Any]:
        return {"max_distance": self.max_distance, "min_cosine": self.min_cosine}

    def check(self, weights: Mapping[str, np.ndarray], global_weights: Mapping[str, np.ndarray]) -> str | None:
        """Why ``weights`` is out of bounds, or None when it passes."""
        distance, cosine = distance_and_cosine(weights, global_weights)
        if self.max_distance is not None and distance > self.max_distance:
            return f"model is {distance:.4g} from the global model (L2); the filter allows at most {self.max_distance}"
        if self.min_cosine is not None and cosine < self.min_cosine:
            return f"model has cosine {cosine:.4g} with the global model; the filter needs at least {self.min_cosine}"
        return None
