"""Server optimisers: treat ``aggregate - global`` as a pseudo-gradient and step on it.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, and Hsu et
al., "Measuring the Effects of Non-Identical Data Distribution" (2019) for FedAvgM. With
``Δ_t = x̄_t - x_t`` (the mean client model minus the global model):

    FedAvgM:    v ← β v + Δ                                x ← x + η v
    FedAdagrad: m ← β1 m + (1-β1) Δ;  v ← v + Δ²           x ← x + η m / (√v + τ)
    FedAdam:    m as above;           v ← β2 v + (1-β2) Δ²
    FedYogi:    m as above;           v ← v - (1-β2) Δ² sign(v - Δ²)

As in the paper there is no bias correction, and ``v`` starts at ``τ²``. Every step is
a pure function ``(global, aggregate, state) → (new global, new state)``; the state is
plain named tensors (``m/<name>``, ``v/<name>``) and a step counter, so it is saved and
restored like a model. Only the model's floating-point tensors are optimised: integer
tensors (e.g. BatchNorm's ``num_batches_tracked``) and reserved strategy state
(``fedloom.*``, e.g. SCAFFOLD's control variate) take the aggregate as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedloom.algorithms.casting import cast_like, saturate
from fedloom.core.errors import ConfigError
from fedloom.core.reserved import RESERVED_PREFIX
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class ServerOptState:
    """A server optimiser's state after ``step`` updates: ``tensors`` maps ``slot/name`` to arrays."""

    step: int = 0
    tensors: Weights = field(default_factory=dict)


class ServerOptimizer(Protocol):
    """Turns the round's aggregate into the next global model, keeping explicit state."""

    @property
    def name(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def init(self, global_weights: Mapping[str, np.ndarray]) -> ServerOptState: ...

    def step(
        self, global_weights: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray], state: ServerOptState
    ) -> tuple[Weights, ServerOptState]: ...


def _optimised(name: str, array: np.ndarray) -> bool:
    """Whether the optimiser steps tensor ``name``: the model's floating-point tensors only.

    Reserved tensors (``fedloom.*``: SCAFFOLD's control variate, FedCurv's Fisher sums) are
    strategy state with their own update rule, which the aggregate already applied; a
    momentum or Adam step on them would replace that rule.
    """
    return bool(np.asarray(array).dtype.kind == "f") and not name.startswith(RESERVED_PREFIX)


def pseudo_gradient(global_weights: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray]) -> Weights:
    """``aggregate - global`` in float64 for every floating-point tensor (saturated: 1e308 - (-1e308)
    is not Inf but float64's largest value)."""
    with np.errstate(over="ignore"):
        return {
            name: saturate(np.asarray(aggregate[name], np.float64) - np.asarray(value, np.float64))
            for name, value in global_weights.items()
            if _optimised(name, value)
        }


def _apply(
    global_weights: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray], moves: Mapping[str, np.ndarray]
) -> Weights:
    """``global + move`` for optimised tensors (in their dtype); the aggregate for the rest."""
    out: Weights = {}
    for name, value in global_weights.items():
        if name in moves:
            with np.errstate(over="ignore"):  # a step past the dtype's range saturates in cast_like
                out[name] = cast_like(np.asarray(value, np.float64) + moves[name], value)
        else:
            out[name] = cast_like(aggregate[name], value)
    return out


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value} (set --{key.replace('_', '-')})")


def _check_unit(**values: float) -> None:
    for key, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {value} (set --{key.replace('_', '-')})")


@dataclass(frozen=True)
class FedAvgM:
    """Server momentum (Hsu et al. 2019). ``server_lr=1, server_momentum=0`` is exactly FedAvg."""

    server_lr: float = 1.0
    server_momentum: float = 0.9
    name: str = "fedavgm"

    def __post_init__(self) -> None:
        _check_positive(server_lr=self.server_lr)
        _check_unit(server_momentum=self.server_momentum)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "server_lr": self.server_lr, "server_momentum": self.server_momentum}

    def init(self, global_weights: Mapping[str, np.ndarray]) -> ServerOptState:
        zeros = {f"v/{k}": np.zeros(v.shape, np.float64) for k, v in global_weights.items() if _optimised(k, v)}
        return ServerOptState(0, zeros)

    def step(
        self, global_weights: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray], state: ServerOptState
    ) -> tuple[Weights, ServerOptState]:
        delta = pseudo_gradient(global_weights, aggregate)
        with np.errstate(over="ignore"):  # momentum may leave float64: it saturates
            velocity = {k: saturate(self.server_momentum * state.tensors[f"v/{k}"] + d) for k, d in delta.items()}
            moves = {k: saturate(self.server_lr * v) for k, v in velocity.items()}
        new_state = ServerOptState(state.step + 1, {f"v/{k}": v for k, v in velocity.items()})
        return _apply(global_weights, aggregate, moves), new_state


@dataclass(frozen=True)
class AdaptiveServerOpt:
    """FedAdagrad, FedAdam or FedYogi (Reddi et al. 2021); ``variant`` picks the second moment."""

    variant: str = "fedadam"
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    VARIANTS = ("fedadagrad", "fedadam", "fedyogi")

    def __post_init__(self) -> None:
        if self.variant not in self.VARIANTS:
            raise ConfigError(f"adaptive server optimiser must be one of {self.VARIANTS}, got {self.variant!r}")
        _check_positive(server_lr=self.server_lr, tau=self.tau)
        _check_unit(beta1=self.beta1, beta2=self.beta2)

    @property
    def name(self) -> str:
        return self.variant

    def describe(self) -> dict[str, Any]:
        params = {"server_lr": self.server_lr, "beta1": self.beta1, "tau": self.tau}
        if self.variant != "fedadagrad":
            params["beta2"] = self.beta2
        return {"name": self.variant, **params}

    def init(self, global_weights: Mapping[str, np.ndarray]) -> ServerOptState:
        tensors: Weights = {}
        for k, v in global_weights.items():
            if _optimised(k, v):
                tensors[f"m/{k}"] = np.zeros(v.shape, np.float64)
                tensors[f"v/{k}"] = np.full(v.shape, self.tau**2, np.float64)
        return ServerOptState(0, tensors)

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        if self.variant == "fedadagrad":
            return saturate(v + squared)
        if self.variant == "fedadam":
            return saturate(self.beta2 * v + (1 - self.beta2) * squared)
        return saturate(v - (1 - self.beta2) * squared * np.sign(v - squared))

    def step(
        self, global_weights: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray], state: ServerOptState
    ) -> tuple[Weights, ServerOptState]:
        delta = pseudo_gradient(global_weights, aggregate)
        tensors: Weights = {}
        moves: Weights = {}
        with np.errstate(over="ignore"):  # squares of huge steps saturate instead of becoming Inf
            for k, d in delta.items():
                m = saturate(self.beta1 * state.tensors[f"m/{k}"] + (1 - self.beta1) * d)
                v = self._second_moment(state.tensors[f"v/{k}"], saturate(d * d))
                tensors[f"m/{k}"], tensors[f"v/{k}"] = m, v
                moves[k] = saturate(self.server_lr * m / (np.sqrt(v) + self.tau))
        return _apply(global_weights, aggregate, moves), ServerOptState(state.step + 1, tensors)


def check_state(state: ServerOptState, expected: ServerOptState) -> None:
    """Raise ConfigError when a restored state does not fit the model (other names or shapes)."""
    if set(state.tensors) != set(expected.tensors) or any(
        state.tensors[k].shape != v.shape for k, v in expected.tensors.items()
    ):
        raise ConfigError("the saved server optimiser state does not match this model or optimiser")
