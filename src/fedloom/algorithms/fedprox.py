"""FedProx (Li et al. 2020): a proximal term that keeps each client near the global model.

Each client minimises ``L_i(θ) + μ/2 ‖θ − θ_global‖²``: the trainer adds ``μ(θ − θ_global)``
to every floating-point parameter's gradient, given as the affine term ``scale = μ``,
``offset = −μ θ_global``. Nothing is kept between rounds and the server is any
aggregator's, so the term combines with every strategy (``proximal_mu`` on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedloom.algorithms.units import ClientOutcome, ClientRound
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.terms import NO_TERMS, AffineTerm, ClientTerms

#: the wire key of FedProx's μ
PROXIMAL_MU = "proximal_mu"


def proximal_mu(config: FitConfig) -> float:
    """μ from ``config.extra`` (0 when absent), refused unless a number >= 0."""
    mu = config.extra.get(PROXIMAL_MU, 0.0)
    if not isinstance(mu, (int, float)) or isinstance(mu, bool) or not mu >= 0:
        raise ConfigError(f"{PROXIMAL_MU} must be a number >= 0, got {mu!r} (set --proximal-mu)")
    return float(mu)


@dataclass(frozen=True)
class FedProxClient:
    """FedProx's client part (no state: the anchor is the model the fit starts from)."""

    name: str = "fedprox"
    keeps_state: bool = False

    def terms(self, step: ClientRound) -> ClientTerms:
        mu = proximal_mu(step.config)
        if mu == 0:
            return NO_TERMS  # μ = 0 is plain local training, bit for bit
        return ClientTerms(
            {
                k: AffineTerm(mu, np.asarray(-mu * np.asarray(v, np.float64)))
                for k, v in step.model.items()
                if v.dtype.kind == "f"
            }
        )

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        return ClientOutcome({}, {})
