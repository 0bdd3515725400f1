"""Simulated adversaries, for evaluating robust aggregation.

A seeded fraction of the clients is malicious for the whole run. Data poisoning
(``label_flip``) changes what those clients train on; model poisoning changes what they
send, computed from the round's honest updates:

- ``sign_flip``: ``g − s·(w − g)`` — the update reversed and scaled by ``scale`` (default 1).
- ``gaussian``: ``g + N(0, scale²)`` per coordinate — noise instead of an update.
- ``boost``: ``g + s·(w − g)`` — model replacement by a boosted update (Bagdasaryan et
  al. 2020); ``scale`` defaults to the number of clients per round.
- ``alie``: "A Little Is Enough" (Baruch et al. 2019): every attacker sends
  ``μ − z·σ`` (coordinate-wise mean and std of the round's updates) with ``z`` from the
  paper's formula for n clients and f attackers; an omniscient variant that sees every
  update of the round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights

ATTACKS = ("none", "label_flip", "sign_flip", "gaussian", "boost", "alie")
MODEL_ATTACKS = ("sign_flip", "gaussian", "boost", "alie")


@dataclass(frozen=True)
class Adversary:
    """``kind`` of attack by a ``fraction`` of clients; ``scale`` as described per attack (0 = default)."""

    kind: str = "none"
    fraction: float = 0.2
    scale: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ConfigError(f"attack must be one of {', '.join(ATTACKS)}; got {self.kind!r} (set --attack)")
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"attack_fraction must be in [0, 1), got {self.fraction} (set --attack-fraction)")
        if self.scale < 0:
            raise ConfigError(f"attack_scale must be >= 0, got {self.scale} (set --attack-scale)")

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.fraction > 0

    @property
    def poisons_models(self) -> bool:
        return self.active and self.kind in MODEL_ATTACKS

    def malicious(self, num_clients: int, seed: int) -> frozenset[int]:
        """The malicious client indices: ``round(fraction·N)`` of them, drawn from ``seed``."""
        if not self.active:
            return frozenset()
        count = round(self.fraction * num_clients)
        chosen = rng_for(seed, "adversary").choice(num_clients, size=count, replace=False)
        return frozenset(int(i) for i in chosen)

    def poison(
        self, round: int, global_weights: Weights, updates: Sequence[ClientUpdate], malicious: frozenset[int], seed: int
    ) -> list[ClientUpdate]:
        """The round's updates with every malicious client's weights replaced by its attack."""
        bad = [i for i, u in enumerate(updates) if int(u.client_id) in malicious]
        if not self.poisons_models or not bad:
            return list(updates)
        crafted = self._alie(updates, len(bad)) if self.kind == "alie" else None
        out = list(updates)
        for i in bad:
            update = updates[i]
            weights = (
                crafted if crafted is not None else self._attack(round, global_weights, update, len(updates), seed)
            )
            out[i] = replace(update, weights={k: v.astype(global_weights[k].dtype) for k, v in weights.items()})
        return out

    def _attack(self, round: int, g: Weights, update: ClientUpdate, per_round: int, seed: int) -> Weights:
        floats = {k for k, v in g.items() if v.dtype.kind == "f"}
        if self.kind == "gaussian":
            rng = rng_for(seed, "gaussian-attack", round, update.client_id)
            sigma = self.scale or 1.0
            return {k: g[k] + rng.normal(0, sigma, g[k].shape) if k in floats else g[k] for k in g}
        factor = -(self.scale or 1.0) if self.kind == "sign_flip" else (self.scale or float(per_round))
        return {
            k: g[k] + factor * (update.weights[k].astype(np.float64) - g[k]) if k in floats else update.weights[k]
            for k in g
        }

    @staticmethod
    def _alie(updates: Sequence[ClientUpdate], attackers: int) -> Weights:
        n = len(updates)
        supporters = n // 2 + 1 - attackers
        z = NormalDist().inv_cdf(min(max((n - supporters) / n, 1e-6), 1 - 1e-6))
        out: Weights = {}
        for name in updates[0].weights:
            stacked = np.stack([np.asarray(u.weights[name], np.float64) for u in updates])
            out[name] = stacked.mean(axis=0) - z * stacked.std(axis=0)
        return out


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping: class c becomes ``num_classes − 1 − c``."""
    flipped: np.ndarray = (num_classes - 1 - np.asarray(y)).astype(np.asarray(y).dtype)
    return flipped
