"""A model update as one vector of the ring, and the sum of such vectors back as a mean.

What client k puts into the ring is ``n_k · q(delta_k)`` for every floating-point element
(``delta = local - global``, quantised by :mod:`~fedloom.algorithms.secagg.ring`),
``n_k · delta_k`` exactly (two's complement) for every integer element (BatchNorm's
``num_batches_tracked``, counters), and ``n_k`` itself as one last word. The sum over
the contributors is therefore ``Σ n_k q(delta_k)``, ``Σ n_k delta_k`` and ``Σ n_k``:
exactly what a weighted mean needs and nothing per client. Tensors are laid out in name
order, each flattened; 0-d tensors are one word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms.secagg import ring
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.core.errors import ValidationError, WeightsMismatchError
from fedloom.core.weights import Weights, check_finite

#: integer deltas whose weighted sum could leave int64 are refused (this bound times Σ n_k < 2^62)
_INT_ROOM = 1 << 62


@dataclass(frozen=True)
class _Slot:
    name: str
    start: int
    stop: int
    shape: tuple[int, ...]
    exact: bool  # integer/bool tensors travel exactly, floats are quantised


class RingLayout:
    """Where each tensor of a model sits in the round's ring vector."""

    def __init__(self, reference: Mapping[str, np.ndarray], settings: SecAggSettings) -> None:
        self.settings = settings
        self._like = {name: np.empty(v.shape, v.dtype) for name, v in reference.items()}
        slots, start = [], 0
        for name in sorted(reference):
            value = reference[name]
            size = int(np.prod(value.shape, dtype=np.int64))
            slots.append(_Slot(name, start, start + size, tuple(value.shape), value.dtype.kind in "iub"))
            start += size
        self._slots = tuple(slots)
        self.length = start + 1  # the last word carries n_k

    def encode(self, delta: Mapping[str, np.ndarray], num_samples: int, rng: np.random.Generator | None) -> np.ndarray:
        """``n_k · q(delta)`` (integers exact) and ``n_k``, as ring words."""
        self._check_shapes(delta)
        check_finite(delta)
        s = self.settings
        if not 1 <= num_samples <= s.max_total_samples:
            raise ValidationError(
                f"num_samples must be in [1, max_total_samples={s.max_total_samples}], got {num_samples}"
            )
        words = np.empty(self.length, np.uint64)
        weight = np.uint64(num_samples)
        for slot in self._slots:
            flat = np.asarray(delta[slot.name]).reshape(-1)
            if slot.exact:
                words[slot.start : slot.stop] = ring.from_signed(self._exact(slot.name, flat) * num_samples)
            else:
                quantised = ring.quantise(flat.astype(np.float64), s.clip_range, s.bits, rng)
                words[slot.start : slot.stop] = np.multiply(quantised, weight, dtype=np.uint64)
        words[-1] = weight
        return words

    def _check_shapes(self, delta: Mapping[str, np.ndarray]) -> None:
        """Same names and shapes as the model (a delta's dtype may be wider: float64, int64)."""
        if set(delta) != set(self._like):
            raise WeightsMismatchError(
                f"the update has tensors {sorted(set(delta) ^ set(self._like))} that the model does not (or lacks them)"
            )
        for name, like in self._like.items():
            if np.shape(delta[name]) != like.shape:
                raise WeightsMismatchError(f"tensor {name!r}: shape {np.shape(delta[name])}, expected {like.shape}")

    def _exact(self, name: str, flat: np.ndarray) -> np.ndarray:
        values = flat.astype(np.int64)
        limit = _INT_ROOM // self.settings.max_total_samples
        if values.size and int(np.max(np.abs(values))) >= limit:
            raise ValidationError(
                f"tensor {name!r}: an integer delta of {int(np.max(np.abs(values)))} does not fit the ring with"
                f" max_total_samples={self.settings.max_total_samples} (limit {limit})"
            )
        return values

    def decode(self, total: np.ndarray) -> tuple[Weights, int]:
        """The float64 weighted-mean delta per tensor, and Σ n_k, from the unmasked sum."""
        if total.shape != (self.length,):
            raise ValidationError(f"an unmasked sum must have {self.length} words, got {total.shape}")
        weight = int(total[-1])
        if not 1 <= weight <= self.settings.max_total_samples:
            raise ValidationError(f"the unmasked total weight {weight} is outside [1, max_total_samples]")
        s = self.settings
        means: Weights = {}
        for slot in self._slots:
            part = total[slot.start : slot.stop]
            if slot.exact:
                mean = ring.to_signed(part).astype(np.float64) / weight
            else:
                mean = ring.dequantise_mean(part, weight, s.clip_range, s.bits)
            means[slot.name] = mean.reshape(slot.shape)
        return means, weight
