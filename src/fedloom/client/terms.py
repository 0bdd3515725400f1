"""Client-side strategy terms a Trainer reads from ``FitConfig.extra``.

The server's strategy puts them there (``ClientSettings.extra``); the built-in trainers
honour them, and a user's own Trainer can read the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig

PROXIMAL_MU = "proximal_mu"
REPORT_INITIAL_LOSS = "report_initial_loss"
GRADIENT_CORRECTION = "gradient_correction"
CURVATURE = "curvature"
CURVATURE_LAMBDA = "curvature_lambda"
REPORT_FISHER = "report_fisher"
#: a trainer asked to ``report_fisher`` returns the diagonal Fisher of each parameter under this prefix
FISHER_PREFIX = "fedloom.fisher/"


@dataclass(frozen=True)
class Curvature:
    """FedCurv's penalty ``λ Σ_k (a_k θ_k² − 2 b_k θ_k)`` (+ const), whose gradient is ``2λ(a θ − b)``:
    ``a`` = the other clients' summed Fisher, ``b`` = their summed Fisher ⊙ weights."""

    a: Mapping[str, np.ndarray]
    b: Mapping[str, np.ndarray]
    weight: float

    def gradient(self, name: str, theta: np.ndarray) -> np.ndarray | None:
        if name not in self.a:
            return None
        grad: np.ndarray = 2.0 * self.weight * (self.a[name] * theta - self.b[name])
        return grad


@dataclass(frozen=True)
class ClientTerms:
    """``proximal_mu``: FedProx's μ (0 = off). ``report_initial_loss``: report the global
    model's loss on the local data before training as metric ``initial_loss`` (q-FedAvg).
    ``gradient_correction``: arrays added to each named parameter's gradient at every
    step (SCAFFOLD's ``c − c_i``; set in-process by fedloom, never sent over the wire).
    ``curvature``: FedCurv's penalty (in-process too). ``report_fisher``: return each
    parameter's diagonal empirical Fisher (mean squared mini-batch gradient at the trained
    weights) in the result's weights under ``FISHER_PREFIX``."""

    proximal_mu: float = 0.0
    report_initial_loss: bool = False
    gradient_correction: Mapping[str, np.ndarray] = field(default_factory=dict)
    curvature: Curvature | None = None
    report_fisher: bool = False

    @classmethod
    def from_config(cls, config: FitConfig) -> ClientTerms:
        mu = config.extra.get(PROXIMAL_MU, 0.0)
        if not isinstance(mu, (int, float)) or isinstance(mu, bool) or mu < 0:
            raise ConfigError(f"{PROXIMAL_MU} must be a number >= 0, got {mu!r} (set --proximal-mu)")
        correction = config.extra.get(GRADIENT_CORRECTION) or {}
        if not isinstance(correction, Mapping):
            raise ConfigError(f"{GRADIENT_CORRECTION} must map tensor names to arrays")
        curvature = config.extra.get(CURVATURE)
        if curvature is not None and not isinstance(curvature, Curvature):
            raise ConfigError(f"{CURVATURE} must be a fedloom.client.terms.Curvature")
        return cls(
            float(mu),
            bool(config.extra.get(REPORT_INITIAL_LOSS, False)),
            correction,
            curvature,
            bool(config.extra.get(REPORT_FISHER, False)),
        )
