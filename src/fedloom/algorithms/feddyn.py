"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization").

Client i minimises ``L_i(θ) − ⟨g_i, θ⟩ + (α/2)‖θ − θ_global‖²``, whose extra gradient
``αθ − αθ_global − g_i`` is affine in θ (one :class:`~fedloom.core.terms.AffineTerm` per
tensor), then updates its state ``g_i ← g_i − α(θ_i − θ_global)`` (``g_i`` starts at 0
and is kept locally, like SCAFFOLD's ``c_i``). The client returns its drift
``θ_i − θ_global`` in the reserved slots of ``h``.

The server keeps ``h`` inside the global model as reserved tensors
(``fedloom.feddyn.h/<name>``, zero at first), so it is sent, stored and restored with the
model. With m the total number of clients and S the round's participants:
``h ← h − α·(1/m)·Σ_{i∈S}(θ_i − θ_prev)`` and ``θ ← mean_{i∈S}(θ_i) − h/α`` (the plain
mean over participants, as in the paper). m is the number of clients registered with
the round engine, handed over when a round opens (a
:class:`~fedloom.algorithms.strategy.SizedAggregator`, as SCAFFOLD). Integer tensors (e.g.
BatchNorm's ``num_batches_tracked``) have no ``h`` and take the rounded mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like, float64
from fedloom.algorithms.mean import WeightedMeanAccumulator, require_finite
from fedloom.algorithms.units import ClientOutcome, ClientRound
from fedloom.core.errors import ConfigError, ValidationError
from fedloom.core.fit import FitResult
from fedloom.core.reserved import model_part, with_prefix, with_zeros
from fedloom.core.terms import AffineTerm, ClientTerms
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible

#: the server state ``h`` of model tensor ``<name>`` is ``H_PREFIX + <name>``
H_PREFIX = "fedloom.feddyn.h/"
#: the wire key of α (``--feddyn-alpha``)
FEDDYN_ALPHA = "feddyn_alpha"


def with_h(weights: Mapping[str, np.ndarray]) -> Weights:
    """``weights`` plus a zero ``h`` for every floating-point tensor (if not there yet)."""
    return with_zeros(weights, H_PREFIX)


def _checked_alpha(alpha: object) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < float("inf"):
        raise ConfigError(f"FedDyn's {FEDDYN_ALPHA} must be a number > 0, got {alpha!r} (set --feddyn-alpha)")
    return float(alpha)


class FedDynAccumulator:
    """The plain mean of the client models, ``h`` moved by the clients' drifts, then ``mean − h/α``."""

    def __init__(self, reference: Mapping[str, np.ndarray], alpha: float, num_clients: int) -> None:
        if num_clients < 1:
            raise ValidationError(f"FedDyn needs the number of registered clients m >= 1, got {num_clients}")
        self._reference = dict(reference)
        self._models = WeightedMeanAccumulator(model_part(reference))
        self._h = with_prefix(reference, H_PREFIX)
        if not self._h:
            raise ValidationError("the global model has no FedDyn state h; build it with with_h()")
        self._drift = {k: np.zeros(v.shape, np.float64) for k, v in self._h.items()}
        self._alpha, self._num_clients = alpha, num_clients
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        drifts = with_prefix(update.weights, H_PREFIX)
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            sums = {name: float64(total + drifts[name]) for name, total in self._drift.items()}
        require_finite({H_PREFIX + k: v for k, v in sums.items()}, "FedDyn")
        self._models.add_weights(model_part(update.weights), 1.0)  # the paper's plain mean over S
        self._drift = sums
        self.count += 1

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        out = self._models.result()  # integer tensors: the rounded mean, as 0-d arrays too
        means, _, _ = self._models.partial_sums()  # float64 means of the float tensors
        for name, h in self._h.items():
            moved = float64(h) - self._alpha * self._drift[name] / self._num_clients
            out[H_PREFIX + name] = cast_like(moved, h)
            out[name] = cast_like(means[name] - moved / self._alpha, self._reference[name])
        return out


@dataclass(frozen=True)
class FedDyn:
    """FedDyn's aggregator (α, ``alpha``, is sent to clients); a SizedAggregator: h's step needs m."""

    alpha: float = 0.01
    name: str = "feddyn"
    mergeable: bool = False

    def __post_init__(self) -> None:
        _checked_alpha(self.alpha)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha}

    def client_extra(self) -> dict[str, Any]:
        return {FEDDYN_ALPHA: self.alpha}

    def initial(self, weights: Mapping[str, np.ndarray]) -> Weights:
        """The first global model, with a zero ``h`` in it."""
        return with_h(weights)

    def client_part(self) -> FedDynClient:
        return FedDynClient()

    def start(self, reference: Mapping[str, np.ndarray]) -> FedDynAccumulator:
        raise ConfigError(
            "FedDyn needs the number of registered clients m: start its rounds with"
            " Strategy.start_accumulator(reference, num_clients) (RoundEngine does) or start_sized"
        )

    def start_sized(self, reference: Mapping[str, np.ndarray], num_clients: int) -> FedDynAccumulator:
        return FedDynAccumulator(reference, self.alpha, num_clients)


def _state(step: ClientRound) -> tuple[float, Weights]:
    """(α, g_i) with g_i in float64 arrays, zero for a client's first fit."""
    alpha = _checked_alpha(step.config.extra.get(FEDDYN_ALPHA))
    slots = with_prefix(step.reserved, H_PREFIX)
    return alpha, {k: np.asarray(step.kept.get(k, np.zeros(v.shape)), np.float64) for k, v in slots.items()}


@dataclass(frozen=True)
class FedDynClient:
    """FedDyn's client part: the dynamic regulariser's gradient, then ``g_i`` and the drift."""

    name: str = "feddyn"
    keeps_state: bool = True

    def terms(self, step: ClientRound) -> ClientTerms:
        """``−g_i + α(θ − θ_global)`` as ``scale = α``, ``offset = −g_i − α θ_global``."""
        alpha, g = _state(step)
        return ClientTerms(
            {k: AffineTerm(alpha, np.asarray(-g[k] - alpha * np.asarray(step.model[k], np.float64))) for k in g}
        )

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        """``g_i ← g_i − α(θ_i − θ_global)`` is kept; the drift ``θ_i − θ_global`` is sent in h's slots."""
        alpha, g = _state(step)
        drift = {k: np.asarray(trained.weights[k], np.float64) - np.asarray(step.model[k], np.float64) for k in g}
        kept = {k: np.asarray(g[k] - alpha * drift[k]) for k in g}
        slots = with_prefix(step.reserved, H_PREFIX)
        return ClientOutcome({H_PREFIX + k: np.asarray(drift[k], slots[k].dtype) for k in g}, kept)
