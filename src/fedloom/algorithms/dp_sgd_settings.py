"""Sample-level DP-SGD settings: what the server tells every client, and how they travel.

The server chooses DP-SGD's noise multiplier z, clipping norm C and the δ at which ε is
reported, once for the run; they reach each client inside ``FitConfig.extra["dp_sgd"]``
(plain JSON), so a simulated client and a deployed agent receive exactly the same
instruction. The settings live in ``algorithms`` because both sides need them: the server
(and ``fedloom sim``) writes them, the client (``fedloom.client.dp_sgd``) reads them back
with the same checks, so a hand-edited or corrupted value is refused by name on arrival.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedloom.core.errors import ConfigError

#: what each DP-SGD client reports per round (stored per client; the round's value is the worst client's)
EPSILON_METRIC = "privacy/dp_sgd_epsilon"
DELTA_METRIC = "privacy/dp_sgd_delta"
STEPS_METRIC = "privacy/dp_sgd_steps"

if TYPE_CHECKING:  # strategy.py reads DP_SGD_KEY from here
    from fedloom.algorithms.strategy import Strategy

#: the key of ``FitConfig.extra`` that carries the settings
DP_SGD_KEY = "dp_sgd"
_FIELDS = ("noise_multiplier", "max_grad_norm", "delta")


def _number(name: str, value: Any, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"dp_sgd {name} must be a finite number, got {value!r} (set {flag})")
    return float(value)


@dataclass(frozen=True)
class DPSGDSettings:
    """DP-SGD's parameters: noise std over clip norm (z), the per-example clip norm (C), and δ.

    Each client clips every example's gradient to norm C, adds N(0, (zC)²) noise to the
    sum of a Poisson-sampled batch and divides by the expected batch size. δ is not a
    training parameter: it is where the client's (ε, δ) curve is read for reporting.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        z = _number("noise_multiplier", self.noise_multiplier, "--dp-sgd-noise")
        c = _number("max_grad_norm", self.max_grad_norm, "--dp-sgd-clip")
        d = _number("delta", self.delta, "--dp-sgd-delta")
        if z <= 0:
            raise ConfigError(f"dp_sgd noise_multiplier must be > 0, got {z} (set --dp-sgd-noise, e.g. 1.0)")
        if c <= 0:
            raise ConfigError(f"dp_sgd max_grad_norm must be > 0, got {c} (set --dp-sgd-clip, e.g. 1.0)")
        if not 0 < d < 1:
            raise ConfigError(
                f"dp_sgd delta must be in (0, 1), got {d} (set --dp-sgd-delta below 1/examples per client, e.g. 1e-5)"
            )

    def to_wire(self) -> dict[str, float]:
        """The JSON object sent in ``FitConfig.extra["dp_sgd"]``."""
        return {name: float(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def from_wire(cls, value: Any) -> DPSGDSettings:
        """The settings a client received, checked as strictly as the server's own."""
        if not isinstance(value, Mapping):
            raise ConfigError(f"{DP_SGD_KEY} must be an object with {', '.join(_FIELDS)}, got {value!r}")
        unknown = sorted(set(value) - set(_FIELDS))
        missing = [name for name in _FIELDS if name not in value]
        if unknown or missing:
            raise ConfigError(
                f"{DP_SGD_KEY} must have exactly the fields {', '.join(_FIELDS)}; "
                f"unknown {unknown}, missing {missing}: upgrade fedloom on this client if the server is newer"
            )
        return cls(**{name: value[name] for name in _FIELDS})


def dp_sgd_from_extra(extra: Mapping[str, Any]) -> DPSGDSettings | None:
    """The DP-SGD settings a FitConfig's ``extra`` carries, or None when the run does not ask for DP-SGD."""
    if DP_SGD_KEY not in extra:
        return None
    return DPSGDSettings.from_wire(extra[DP_SGD_KEY])


def with_dp_sgd(strategy: Strategy, settings: DPSGDSettings) -> Strategy:
    """``strategy`` whose every client trains with DP-SGD under ``settings``."""
    client = dataclasses.replace(strategy.client, extra={**strategy.client.extra, DP_SGD_KEY: settings.to_wire()})
    return dataclasses.replace(strategy, client=client)
