"""The weighted mean as a mergeable streaming accumulator.

FedAvg's aggregate is ``sum_k n_k * w_k / sum_k n_k``. Keeping only a running value and
the total weight lets a server fold uploads in as they arrive (O(model) memory, not
O(clients x model)) and lets simulation workers pre-merge their clients into one
partial result; merging partials gives the same result as adding every update.

The running value is the weighted *mean* so far, not the weighted sum: each update moves
it by ``mean ← (T/(T+n))·mean + (n/(T+n))·w``, a convex combination, so it never leaves
the range of the values added. A sum ``Σ n_k·w_k`` overflows float64 for finite inputs
(``w = 1e300`` from a client with ``n = 1e9`` samples is Inf), after which the round
could never close and a restarted deployment would replay the same Inf. Means are kept
in float64 so the order of arrival barely changes the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.algorithms.casting import cast_like
from fedloom.core.errors import NonFiniteError, ValidationError
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible, check_finite

_LARGEST = float(np.finfo(np.float64).max)


def convex_step(mean: np.ndarray, value: np.ndarray, keep: float, take: float) -> None:
    """``mean ← keep·mean + take·value`` in place, for ``keep + take = 1``.

    Both terms are at most the larger magnitude, so the exact result is finite; only
    rounding at the very top of float64's range can reach Inf, and that is clamped back
    to the largest finite value (the exact result is within one rounding of it).
    """
    with np.errstate(over="ignore"):
        mean *= keep
        mean += take * value
    np.clip(mean, -_LARGEST, _LARGEST, out=mean)


def require_finite(totals: Mapping[str, np.ndarray], rule: str) -> None:
    """Raise :class:`NonFiniteError` naming the tensor when a running total would leave float64.

    Accumulators that must keep true sums compute their new totals first and call this
    before storing them, so an update that would overflow is refused and changes nothing.
    """
    try:
        check_finite(totals)
    except NonFiniteError as exc:
        raise NonFiniteError(
            f"{exc} after adding this update: its values are too large for {rule}'s float64 sums"
            " (send smaller values or use the weighted mean)"
        ) from None


class WeightedMeanAccumulator:
    """Running ``sum(weight * tensor) / sum(weight)`` and ``sum(weight)`` over added models."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._like = {name: np.empty(v.shape, dtype=v.dtype) for name, v in reference.items()}
        self._means: dict[str, np.ndarray] = {name: np.zeros(v.shape, np.float64) for name, v in reference.items()}
        self.total_weight = 0.0
        self.count = 0

    def add_weights(self, weights: Mapping[str, np.ndarray], weight: float) -> None:
        """Fold in one model with aggregation weight ``weight`` (> 0); a non-finite model is refused."""
        if not (weight > 0 and np.isfinite(weight)):
            raise ValidationError(f"aggregation weight must be > 0 and finite, got {weight}")
        check_compatible(weights, self._like)
        check_finite(weights)
        self._fold({name: np.asarray(weights[name], np.float64) for name in self._means}, float(weight))
        self.count += 1

    def _fold(self, means: Mapping[str, np.ndarray], weight: float) -> None:
        total = self.total_weight + weight
        for name, mean in self._means.items():
            convex_step(mean, means[name], self.total_weight / total, weight / total)
        self.total_weight = total

    def add(self, update: ClientUpdate) -> None:
        """Fold in a client update, weighted by its ``num_samples`` (McMahan et al. 2017)."""
        self.add_weights(update.weights, float(update.num_samples))

    def merge(self, other: WeightedMeanAccumulator) -> None:
        """Absorb another accumulator's partial result (e.g. from a worker process)."""
        if set(other._means) != set(self._means) or any(
            other._means[k].shape != v.shape for k, v in self._means.items()
        ):
            raise ValidationError("cannot merge accumulators built for different models")
        if other.count:
            self._fold(other._means, other.total_weight)
        self.count += other.count

    def result(self) -> Weights:
        """The weighted mean, cast back to each tensor's original dtype (integers are rounded)."""
        if self.count == 0:
            raise ValidationError("cannot aggregate: no updates were added")
        return {name: cast_like(mean, self._like[name]) for name, mean in self._means.items()}

    def partial_sums(self) -> tuple[Weights, float, int]:
        """What a worker ships to the driver: the float64 running means, total weight and count."""
        return {k: v.copy() for k, v in self._means.items()}, self.total_weight, self.count

    @classmethod
    def from_partial_sums(
        cls, reference: Mapping[str, np.ndarray], means: Mapping[str, np.ndarray], total_weight: float, count: int
    ) -> WeightedMeanAccumulator:
        """Rebuild an accumulator from :meth:`partial_sums` output (checked against ``reference``)."""
        acc = cls(reference)
        float_ref = {k: np.empty(v.shape, np.float64) for k, v in reference.items()}
        check_compatible(means, float_ref)
        check_finite(means)
        for name in acc._means:
            acc._means[name] = np.array(means[name], dtype=np.float64, copy=True)
        acc.total_weight = float(total_weight)
        acc.count = int(count)
        return acc


def weighted_mean(updates: list[ClientUpdate], reference: Mapping[str, np.ndarray]) -> Weights:
    """One-shot FedAvg aggregate of ``updates`` (convenience over the accumulator)."""
    acc = WeightedMeanAccumulator(reference)
    for update in updates:
        acc.add(update)
    return acc.result()
