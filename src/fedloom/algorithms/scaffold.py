"""SCAFFOLD (Karimireddy et al. 2020): control variates that correct client drift.

The server's control variate ``c`` travels inside the global model under reserved names
(``fedloom.scaffold.c/<tensor>``), so it is sent, stored and restored like the model
itself (a restarted aggregator has it; nothing else is needed). Each client keeps its own
``c_i`` locally, trains with the gradient correction ``c − c_i``, updates
``c_i ← c_i − c + (x − y_i)/(K·lr)`` (option II of the paper) and returns ``Δc_i`` in the
same reserved slots. The server then sets ``x`` to the sample-weighted mean of the client
models (as FedAvg; the paper's unweighted mean with server lr 1 is the equal-size case)
and ``c ← c + (|S|/N)·mean_i Δc_i = c + (1/N)·Σ_i Δc_i``, with ``N`` the clients
registered with the round engine and the sum over the updates it accepted (``|S|`` as
actually drawn, not the nominal fraction: 10 clients at fraction 0.25 draw 2, so c moves
by 0.2 of the mean). This keeps ``c`` the mean of all N clients' ``c_i``.

Reserved tensors (any name starting ``fedloom.``) are not part of the user's model:
evaluation and export strip them (:func:`model_part`). The client part
(:class:`ScaffoldClient`) is the same code in the simulation and in a deployed agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like, float64
from fedloom.algorithms.mean import WeightedMeanAccumulator, require_finite
from fedloom.algorithms.units import ClientOutcome, ClientRound
from fedloom.core.errors import ClientError, ConfigError, ValidationError
from fedloom.core.fit import FitResult
from fedloom.core.reserved import model_part, with_prefix, with_zeros
from fedloom.core.terms import AffineTerm, ClientTerms
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible

#: the server's control variate ``c`` of model tensor ``<name>`` is ``CONTROL_PREFIX + <name>``
CONTROL_PREFIX = "fedloom.scaffold.c/"


def controls(weights: Mapping[str, np.ndarray]) -> Weights:
    """SCAFFOLD's control-variate tensors, keyed by model tensor name."""
    return with_prefix(weights, CONTROL_PREFIX)


def with_controls(weights: Mapping[str, np.ndarray]) -> Weights:
    """``weights`` plus a zero control variate for every floating-point tensor (if not there yet)."""
    return with_zeros(weights, CONTROL_PREFIX)


class ScaffoldAccumulator:
    """Weighted mean of the client models; ``c + (1/N)·Σ Δc_i`` for the controls."""

    def __init__(self, reference: Mapping[str, np.ndarray], num_clients: int) -> None:
        if num_clients < 1:
            raise ValidationError(f"SCAFFOLD needs the number of registered clients N >= 1, got {num_clients}")
        self._reference = dict(reference)
        self._models = WeightedMeanAccumulator(model_part(reference))
        self._control = controls(reference)
        if not self._control:
            raise ValidationError("the global model has no SCAFFOLD control variates; build it with with_controls()")
        self._delta_sums = {k: np.zeros(v.shape, np.float64) for k, v in self._control.items()}
        self._num_clients = num_clients
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        deltas = controls(update.weights)
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            sums = {name: float64(total + deltas[name]) for name, total in self._delta_sums.items()}
        require_finite({CONTROL_PREFIX + k: v for k, v in sums.items()}, "SCAFFOLD")
        self._models.add_weights(model_part(update.weights), float(update.num_samples))
        self._delta_sums = sums
        self.count += 1

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        out = self._models.result()
        for name, c in self._control.items():
            moved = c.astype(np.float64) + self._delta_sums[name] / self._num_clients
            out[CONTROL_PREFIX + name] = cast_like(moved, c)
        return out


@dataclass(frozen=True)
class Scaffold:
    """SCAFFOLD's aggregator: a :class:`~fedloom.algorithms.strategy.SizedAggregator`, since
    the control variate's step ``|S|/N`` needs N, which only the round engine knows."""

    name: str = "scaffold"
    mergeable: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def initial(self, weights: Mapping[str, np.ndarray]) -> Weights:
        """The first global model, with the server's (zero) control variate in it."""
        return with_controls(weights)

    def client_part(self) -> ScaffoldClient:
        return ScaffoldClient()

    def start(self, reference: Mapping[str, np.ndarray]) -> ScaffoldAccumulator:
        raise ConfigError(
            "SCAFFOLD needs the number of registered clients N: start its rounds with"
            " Strategy.start_accumulator(reference, num_clients) (RoundEngine does) or start_sized"
        )

    def start_sized(self, reference: Mapping[str, np.ndarray], num_clients: int) -> ScaffoldAccumulator:
        return ScaffoldAccumulator(reference, num_clients)


def _client_controls(step: ClientRound) -> tuple[Weights, Weights]:
    """(c, c_i) in float64 as arrays (0-d included); c_i starts at zero."""
    server_c = controls(step.reserved)
    client_c = {k: np.asarray(step.kept.get(k, np.zeros_like(v)), np.float64) for k, v in server_c.items()}
    return {k: np.asarray(v, np.float64) for k, v in server_c.items()}, client_c


@dataclass(frozen=True)
class ScaffoldClient:
    """SCAFFOLD's client part: train with ``c − c_i``, then ``c_i ← c_i − c + (x − y_i)/(K·lr)``."""

    name: str = "scaffold"
    keeps_state: bool = True

    def terms(self, step: ClientRound) -> ClientTerms:
        server_c, client_c = _client_controls(step)
        # np.asarray throughout: arithmetic on 0-d arrays returns NumPy scalars, which validate_weights refuses
        return ClientTerms({k: AffineTerm(offset=np.asarray(server_c[k] - client_c[k], np.float32)) for k in server_c})

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        """``c_i``'s new value is kept; ``Δc_i`` goes back in the reserved slots."""
        steps = float(trained.metrics.get("local_steps", 0))
        if not steps > 0:
            raise ClientError(
                "SCAFFOLD needs the metric local_steps > 0 from Trainer.fit (the built-in trainers report it)"
            )
        server_c, client_c = _client_controls(step)
        dtypes = {k: v.dtype for k, v in controls(step.reserved).items()}
        scale = 1.0 / (steps * step.config.lr)
        new_c = {
            k: client_c[k] - server_c[k] + scale * (np.asarray(step.model[k], np.float64) - trained.weights[k])
            for k in server_c
        }
        kept = {k: np.asarray(v, dtypes[k]) for k, v in new_c.items()}
        sent = {CONTROL_PREFIX + k: np.asarray(new_c[k] - client_c[k], dtypes[k]) for k in server_c}
        return ClientOutcome(sent, kept)
