"""Simulated client speeds, dropouts and wall-clock time.

Real federations have stragglers: a few clients are many times slower than the median.
``ClientSpeeds`` gives every client a fixed seconds-per-sample drawn from a heavy-tailed
distribution, so a simulation can report accuracy against *simulated* wall-clock time
(synchronous rounds wait for their slowest client or a deadline; asynchronous ones do
not) while the actual training runs as fast as the machine allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for

DISTRIBUTIONS = ("constant", "lognormal", "pareto")


@dataclass(frozen=True)
class ClientSpeeds:
    """Seconds per training sample for each client, plus a per-round dropout probability.

    ``lognormal``: ``median_seconds_per_sample · exp(N(0, spread²))``; ``pareto``: the
    median times a Pareto(shape = ``spread``) factor (smaller shape = heavier tail).
    ``latency_seconds`` is added to every client's time (download + upload).
    """

    distribution: str = "lognormal"
    spread: float = 1.0
    median_seconds_per_sample: float = 0.01
    latency_seconds: float = 1.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"speed distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if not self.spread > 0 or not self.median_seconds_per_sample > 0 or self.latency_seconds < 0:
            raise ConfigError("speed spread and median_seconds_per_sample must be > 0, latency_seconds >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout} (set --dropout)")

    def seconds_per_sample(self, num_clients: int, seed: int) -> np.ndarray:
        """Every client's fixed speed (seeded, so all strategies see the same stragglers)."""
        rng = rng_for(seed, "client-speeds")
        median = self.median_seconds_per_sample
        if self.distribution == "constant":
            return np.full(num_clients, median)
        if self.distribution == "lognormal":
            speeds: np.ndarray = median * np.exp(rng.normal(0.0, self.spread, num_clients))
            return speeds
        factor = (1.0 + rng.pareto(self.spread, num_clients)) / 2.0 ** (1.0 / self.spread)  # median 1
        pareto: np.ndarray = median * factor
        return pareto

    def drops(self, round: int, client_id: str, seed: int) -> bool:
        """Whether a client selected in ``round`` drops out (seeded per round and client)."""
        return self.dropout > 0 and bool(rng_for(seed, "dropout", round, client_id).random() < self.dropout)


def training_seconds(seconds_per_sample: float, num_samples: int, epochs: int, latency: float) -> float:
    """Simulated time for one client to download, train ``epochs`` over its data, and upload."""
    return latency + seconds_per_sample * num_samples * epochs
