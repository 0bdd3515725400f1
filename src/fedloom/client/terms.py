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


@dataclass(frozen=True)
class ClientTerms:
    """``proximal_mu``: FedProx's μ (0 = off). ``report_initial_loss``: report the global
    model's loss on the local data before training as metric ``initial_loss`` (q-FedAvg).
    ``gradient_correction``: arrays added to each named parameter's gradient at every
    step (SCAFFOLD's ``c − c_i``; set in-process by fedloom, never sent over the wire)."""

    proximal_mu: float = 0.0
    report_initial_loss: bool = False
    gradient_correction: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: FitConfig) -> ClientTerms:
        mu = config.extra.get(PROXIMAL_MU, 0.0)
        if not isinstance(mu, (int, float)) or isinstance(mu, bool) or mu < 0:
            raise ConfigError(f"{PROXIMAL_MU} must be a number >= 0, got {mu!r} (set --proximal-mu)")
        correction = config.extra.get(GRADIENT_CORRECTION) or {}
        if not isinstance(correction, Mapping):
            raise ConfigError(f"{GRADIENT_CORRECTION} must map tensor names to arrays")
        return cls(float(mu), bool(config.extra.get(REPORT_INITIAL_LOSS, False)), correction)
