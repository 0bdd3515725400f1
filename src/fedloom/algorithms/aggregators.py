"""Aggregators beyond the weighted mean: robust rules, FedNova and q-FedAvg.

Each aggregator is a small frozen dataclass (its parameters are its description) whose
``start(global)`` returns the round's accumulator. Robust rules keep every update of the
round (O(clients x model): they need them all at once); FedNova and q-FedAvg stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from fedloom.algorithms import robust
from fedloom.algorithms.casting import cast_like, float64
from fedloom.algorithms.mean import WeightedMeanAccumulator, require_finite
from fedloom.core.errors import ConfigError, ValidationError
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible

Reduce = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def flatten(weights: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Every tensor named in ``names``, raveled and concatenated, as one float64 vector."""
    if not names:
        return np.zeros(0, np.float64)
    return np.concatenate([np.asarray(weights[k], np.float64).ravel() for k in names])


def unflatten(vector: np.ndarray, reference: Mapping[str, np.ndarray]) -> Weights:
    """Split ``vector`` back into tensors shaped and typed like ``reference``."""
    out: Weights = {}
    offset = 0
    for name, ref in reference.items():
        out[name] = cast_like(vector[offset : offset + ref.size].reshape(ref.shape), ref)
        offset += ref.size
    return out


class CollectingAccumulator:
    """Keeps every update of a round (flattened) and reduces them all at the end.

    Only floating-point tensors enter the robust rule: integer and bool tensors (step
    counters such as BatchNorm's ``num_batches_tracked``) are not coordinates of the
    model, so they must not decide which model Krum picks, nor be clipped with it. They
    get the coordinate-wise median of the round's values, rounded to the nearest
    integer: robust on its own (one client cannot move a counter arbitrarily), and
    defined for every rule.
    """

    def __init__(self, reference: Mapping[str, np.ndarray], reduce: Reduce) -> None:
        self._reference = {k: np.asarray(v) for k, v in reference.items()}
        self._floats = [k for k, v in self._reference.items() if v.dtype.kind == "f"]
        self._counters = [k for k in self._reference if k not in set(self._floats)]
        self._center = flatten(reference, self._floats)
        self._reduce = reduce
        self._rows: list[np.ndarray] = []
        self._counter_rows: list[np.ndarray] = []
        self._samples: list[float] = []
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        self._rows.append(flatten(update.weights, self._floats))
        self._counter_rows.append(flatten(update.weights, self._counters))
        self._samples.append(float(update.num_samples))
        self.count += 1

    def result(self) -> Weights:
        if not self._rows:
            raise ValidationError("cannot aggregate: no updates were added")
        vector = self._reduce(np.stack(self._rows), np.asarray(self._samples), self._center)
        out = unflatten(vector, {k: self._reference[k] for k in self._floats})
        if self._counters:
            medians = robust.coordinate_median(np.stack(self._counter_rows))
            out.update(unflatten(medians, {k: self._reference[k] for k in self._counters}))
        return {k: out[k] for k in self._reference}


@dataclass(frozen=True)
class _Collecting:
    """Base of the robust aggregators: parameters as fields, maths in ``reduce``."""

    mergeable: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def start(self, reference: Mapping[str, np.ndarray]) -> CollectingAccumulator:
        return CollectingAccumulator(reference, self.reduce)


@dataclass(frozen=True)
class Median(_Collecting):
    """Coordinate-wise median (Yin et al. 2018): tolerates < 50% outliers per coordinate."""

    name: ClassVar[str] = "median"

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.coordinate_median(models)


@dataclass(frozen=True)
class TrimmedMean(_Collecting):
    """Coordinate-wise β-trimmed mean (Yin et al. 2018)."""

    trim_beta: float = 0.2
    name: ClassVar[str] = "trimmed_mean"

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim_beta < 0.5:
            raise ConfigError(f"trim_beta must be in [0, 0.5), got {self.trim_beta} (set --trim-beta)")

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.trimmed_mean(models, self.trim_beta)


@dataclass(frozen=True)
class GeometricMedian(_Collecting):
    """Sample-weighted geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2022)."""

    max_iter: int = 100
    name: ClassVar[str] = "geometric_median"

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.geometric_median(models, samples, max_iter=self.max_iter)


@dataclass(frozen=True)
class Krum(_Collecting):
    """Krum (Blanchard et al. 2017): the one model closest to its n - f - 2 neighbours."""

    byzantine_f: int = 1
    name: ClassVar[str] = "krum"

    def __post_init__(self) -> None:
        if self.byzantine_f < 0:
            raise ConfigError(f"byzantine_f must be >= 0, got {self.byzantine_f} (set --byzantine-f)")

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.krum(models, self.byzantine_f, center=center)


@dataclass(frozen=True)
class MultiKrum(Krum):
    """Multi-Krum: the mean of the ``multikrum_m`` best-scored models."""

    multikrum_m: int = 5
    name: ClassVar[str] = "multikrum"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.multikrum_m < 1:
            raise ConfigError(f"multikrum_m must be >= 1, got {self.multikrum_m} (set --multikrum-m)")

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.krum(models, self.byzantine_f, min(self.multikrum_m, len(models)), center)


@dataclass(frozen=True)
class Bulyan(_Collecting):
    """Bulyan (El Mhamdi et al. 2018): Krum selection then a median-centred trimmed mean; n >= 4f+3."""

    byzantine_f: int = 1
    name: ClassVar[str] = "bulyan"

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.bulyan(models, self.byzantine_f, center)


@dataclass(frozen=True)
class NormBounded(_Collecting):
    """Weighted mean of updates clipped to L2 norm ``clip_norm`` around the global model (Sun et al. 2019)."""

    clip_norm: float = 1.0
    name: ClassVar[str] = "norm_bounded"

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.norm_bounded_mean(models, center, self.clip_norm, samples)


@dataclass(frozen=True)
class CenteredClip(_Collecting):
    """Centred clipping (Karimireddy et al. 2021) around the global model, radius ``clip_norm``."""

    clip_norm: float = 1.0
    clip_iterations: int = 3
    name: ClassVar[str] = "centered_clip"

    def reduce(self, models: np.ndarray, samples: np.ndarray, center: np.ndarray) -> np.ndarray:
        return robust.centered_clip(models, center, self.clip_norm, self.clip_iterations)


def _metric(update: ClientUpdate, key: str, algorithm: str) -> float:
    value = update.metrics.get(key)
    if value is None or not float(value) > 0:
        raise ValidationError(
            f"{algorithm} needs a positive metric {key!r} from client {update.client_id} (got {value!r});"
            f" its Trainer.fit must report it (the built-in trainers do)"
        )
    return float(value)


class FedNovaAccumulator:
    """FedNova (Wang et al. 2020) for local SGD: ``x ← x + τ_eff Σ p_i (x_i - x)/τ_i``.

    ``τ_i`` is client i's number of local steps (metric ``local_steps``), ``p_i`` its
    share of the samples and ``τ_eff = Σ p_i τ_i``: clients that ran more steps no
    longer pull the model further (objective inconsistency).
    """

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._reference = {k: np.asarray(v) for k, v in reference.items()}
        self._normalised = WeightedMeanAccumulator({k: np.zeros(v.shape, np.float64) for k, v in reference.items()})
        self._weighted_steps = 0.0
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        steps = _metric(update, "local_steps", "FedNova")
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            normalised = {
                name: float64((np.asarray(update.weights[name], np.float64) - ref) / steps)
                for name, ref in self._reference.items()
            }
        require_finite(normalised, "FedNova")
        n = float(update.num_samples)
        self._normalised.add_weights(normalised, n)  # Σ p_i (x_i - x)/τ_i as a running mean: cannot overflow
        self._weighted_steps += n * steps
        self.count += 1

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        tau_eff = self._weighted_steps / self._normalised.total_weight
        mean = self._normalised.result()
        with np.errstate(over="ignore"):  # an extrapolation past the dtype's range saturates in cast_like
            return {k: cast_like(ref + tau_eff * mean[k], ref) for k, ref in self._reference.items()}


@dataclass(frozen=True)
class FedNova:
    """Normalised averaging for clients that run different numbers of local steps."""

    name: str = "fednova"
    mergeable: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def start(self, reference: Mapping[str, np.ndarray]) -> FedNovaAccumulator:
        return FedNovaAccumulator(reference)


class QFedAvgAccumulator:
    """q-FedAvg (Li et al., "Fair Resource Allocation in FL", ICLR 2020).

    With ``L = 1/lr``, ``Δw_k = L (w - w_k)`` and ``F_k`` the loss of the global model
    on client k's data (metric ``initial_loss``):
    ``w ← w - Σ F_k^q Δw_k / Σ (q F_k^(q-1) ‖Δw_k‖² + L F_k^q)``.
    Larger q weights clients with higher loss more (q = 0 is FedSGD-like averaging).
    """

    def __init__(self, reference: Mapping[str, np.ndarray], q: float, lr: float) -> None:
        self._reference = {k: np.asarray(v) for k, v in reference.items()}
        self._numerator = {k: np.zeros(v.shape, np.float64) for k, v in reference.items()}
        self._denominator = 0.0
        self._q = q
        self._lipschitz = 1.0 / lr
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        loss = _metric(update, "initial_loss", "q-FedAvg") + 1e-10
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            deltas = {
                k: self._lipschitz * (ref.astype(np.float64) - np.asarray(update.weights[k], np.float64))
                for k, ref in self._reference.items()
            }
            sq_norm = sum(float(np.sum(d * d)) for d in deltas.values())
            numerator = {k: float64(total + loss**self._q * deltas[k]) for k, total in self._numerator.items()}
            spread = self._q * loss ** (self._q - 1) * sq_norm
            denominator = self._denominator + spread + self._lipschitz * loss**self._q
        require_finite({**numerator, "the denominator (squared update norms)": np.asarray(denominator)}, "q-FedAvg")
        self._numerator, self._denominator = numerator, denominator  # only once every new total is finite
        self.count += 1

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        out: Weights = {}
        with np.errstate(over="ignore"):  # a step past the dtype's range saturates in cast_like
            for name, ref in self._reference.items():
                out[name] = cast_like(ref.astype(np.float64) - self._numerator[name] / self._denominator, ref)
        return out


@dataclass(frozen=True)
class QFedAvg:
    """q-FedAvg's aggregator; ``lr`` must be the clients' learning rate (it sets L = 1/lr)."""

    q: float = 1.0
    lr: float = 0.01
    name: str = "qfedavg"
    mergeable: bool = False

    def __post_init__(self) -> None:
        if self.q < 0:
            raise ConfigError(f"q must be >= 0, got {self.q} (set --q)")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "q": self.q}

    def client_extra(self) -> dict[str, Any]:
        """Clients report the global model's loss on their data (F_k) as metric ``initial_loss``."""
        return {"report_initial_loss": True}

    def start(self, reference: Mapping[str, np.ndarray]) -> QFedAvgAccumulator:
        return QFedAvgAccumulator(reference, self.q, self.lr)
