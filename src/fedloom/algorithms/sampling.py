"""Client sampling: which clients train in a round.

Sampling is a pure function of (seed, round, the set of client ids), so the same
experiment selects the same clients whatever executor runs it and after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for


@dataclass(frozen=True)
class ClientSampler:
    """Uniform sampling without replacement of ``max(min_clients, floor(fraction * K))`` of K clients.

    This is the ``m = max(C·K, 1)`` rule of McMahan et al. (2017) with the lower
    bound made configurable; ``fraction=1.0`` selects everyone.
    """

    fraction: float = 0.1
    min_clients: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction} (set --fraction, e.g. 0.1)")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {self.min_clients} (set --min-clients)")

    def num_to_sample(self, num_available: int) -> int:
        """How many of ``num_available`` clients a round selects."""
        if num_available < self.min_clients:
            raise ConfigError(
                f"only {num_available} clients are available but min_clients is {self.min_clients}: "
                "lower --min-clients or add clients"
            )
        wanted = math.floor(self.fraction * num_available + 1e-9)
        return min(num_available, max(self.min_clients, wanted))

    def sample(self, client_ids: Sequence[str], round: int, seed: int) -> list[str]:
        """The clients selected for ``round``, in sorted order; independent of input order."""
        pool = sorted(set(client_ids))
        count = self.num_to_sample(len(pool))
        if count == len(pool):
            return pool
        chosen = rng_for(seed, "sample", round).choice(len(pool), size=count, replace=False)
        return [pool[i] for i in sorted(chosen.tolist())]
