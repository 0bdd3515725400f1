"""The weighted mean as a mergeable streaming accumulator.

FedAvg's aggregate is ``sum_k n_k * w_k / sum_k n_k``. Keeping only the running sum and
the total weight lets a server fold uploads in as they arrive (O(model) memory, not
O(clients x model)) and lets simulation workers pre-merge their clients into one
partial sum; merging partials gives exactly the same result as adding every update.
Sums are kept in float64 so the order of arrival barely changes the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.core.errors import ValidationError
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible


class WeightedMeanAccumulator:
    """Running ``sum(weight * tensor)`` and ``sum(weight)`` over added models."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._shapes = {name: v.shape for name, v in reference.items()}
        self._dtypes = {name: v.dtype for name, v in reference.items()}
        self._sums: dict[str, np.ndarray] = {name: np.zeros(v.shape, dtype=np.float64) for name, v in reference.items()}
        self.total_weight = 0.0
        self.count = 0

    def _like(self) -> dict[str, np.ndarray]:
        return {name: np.empty(self._shapes[name], dtype=self._dtypes[name]) for name in self._sums}

    def add_weights(self, weights: Mapping[str, np.ndarray], weight: float) -> None:
        """Fold in one model with aggregation weight ``weight`` (> 0)."""
        if not weight > 0:
            raise ValidationError(f"aggregation weight must be > 0, got {weight}")
        check_compatible(weights, self._like())
        for name, total in self._sums.items():
            total += np.asarray(weights[name], dtype=np.float64) * weight
        self.total_weight += float(weight)
        self.count += 1

    def add(self, update: ClientUpdate) -> None:
        """Fold in a client update, weighted by its ``num_samples`` (McMahan et al. 2017)."""
        self.add_weights(update.weights, float(update.num_samples))

    def merge(self, other: WeightedMeanAccumulator) -> None:
        """Absorb another accumulator's partial sum (e.g. from a worker process)."""
        if set(other._sums) != set(self._sums) or any(other._shapes[k] != s for k, s in self._shapes.items()):
            raise ValidationError("cannot merge accumulators built for different models")
        for name, total in self._sums.items():
            total += other._sums[name]
        self.total_weight += other.total_weight
        self.count += other.count

    def result(self) -> Weights:
        """The weighted mean, cast back to each tensor's original dtype (integers are rounded)."""
        if self.count == 0:
            raise ValidationError("cannot aggregate: no updates were added")
        out: Weights = {}
        for name, total in self._sums.items():
            mean = total / self.total_weight
            dtype = self._dtypes[name]
            if dtype.kind in "iub":
                mean = np.rint(mean)
            out[name] = np.asarray(mean).astype(dtype)  # 0-d arithmetic yields scalars: keep arrays
        return out

    def partial_sums(self) -> tuple[Weights, float, int]:
        """The raw float64 sums, total weight and count: what a worker ships to the driver."""
        return {k: v.copy() for k, v in self._sums.items()}, self.total_weight, self.count

    @classmethod
    def from_partial_sums(
        cls, reference: Mapping[str, np.ndarray], sums: Mapping[str, np.ndarray], total_weight: float, count: int
    ) -> WeightedMeanAccumulator:
        """Rebuild an accumulator from :meth:`partial_sums` output (checked against ``reference``)."""
        acc = cls(reference)
        float_ref = {k: np.empty(v.shape, np.float64) for k, v in reference.items()}
        check_compatible(sums, float_ref)
        for name in acc._sums:
            acc._sums[name] = np.array(sums[name], dtype=np.float64, copy=True)
        acc.total_weight = float(total_weight)
        acc.count = int(count)
        return acc


def weighted_mean(updates: list[ClientUpdate], reference: Mapping[str, np.ndarray]) -> Weights:
    """One-shot FedAvg aggregate of ``updates`` (convenience over the accumulator)."""
    acc = WeightedMeanAccumulator(reference)
    for update in updates:
        acc.add(update)
    return acc.result()
