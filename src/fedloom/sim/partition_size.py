"""Size-skewed partitions: client sizes follow a fixed law, labels stay IID within each client.

Quantity skew drawn from Dir(alpha) (``quantity`` in :mod:`fedloom.sim.partition`) varies
from seed to seed; benchmarks that study how a strategy copes with a few big and many
small clients want the sizes themselves fixed, so that only the shuffle depends on the
seed. Client ``i`` (counting from 0) gets a share proportional to:

- ``linear``: ``i + 1`` (the largest client is ``num_clients`` times the smallest);
- ``square``: ``(i + 1) ** 2``;
- ``exponential``: ``exp(rate * i)``, with ``rate = 1`` by default (each client about
  ``e = 2.72`` times the one before); lower the rate for many clients, or the first
  ones all end at the one-sample floor.

Sizes are the law's shares of ``num_samples`` rounded by largest remainder, so they sum
exactly; every client holds at least one sample (what the floor adds is taken from the
largest clients). The samples are shuffled with the seed and cut at those sizes.
"""

from __future__ import annotations

import math

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.sim.partition_checks import check_count, check_num_clients, sorted_parts

#: the size laws :func:`size_skew` knows (``fedloom partition --size-skew``).
SIZE_SKEW_KINDS = ("linear", "square", "exponential")


def size_skew(num_samples: int, num_clients: int, kind: str, seed: int, *, rate: float = 1.0) -> list[np.ndarray]:
    """Client ``i``'s size follows ``kind`` (see the module), its samples drawn IID by ``seed``."""
    sizes = skewed_sizes(num_samples, num_clients, kind, rate=rate)
    order = np.random.default_rng(seed).permutation(num_samples)
    return sorted_parts(np.split(order, np.cumsum(sizes)[:-1]))


def skewed_sizes(num_samples: int, num_clients: int, kind: str, *, rate: float = 1.0) -> np.ndarray:
    """The exact client sizes of :func:`size_skew`: the law's shares, summing to ``num_samples``, each >= 1."""
    check_count("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    sizes = _apportion(num_samples, _law(kind, num_clients, rate))
    short = int((sizes == 0).sum())
    sizes[sizes == 0] = 1
    for _ in range(short):  # the floor's samples come from whichever client is largest at the time
        sizes[int(np.argmax(sizes))] -= 1
    return sizes


def _law(kind: str, num_clients: int, rate: float) -> np.ndarray:
    """The relative weights of the clients, largest 1.0 (so no overflow for any number of clients)."""
    position = np.arange(num_clients, dtype=np.float64)
    if kind == "linear":
        return (position + 1) / num_clients
    if kind == "square":
        return ((position + 1) / num_clients) ** 2
    if kind == "exponential":
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(
                f"size_skew_rate must be a finite number > 0 (1.0: each client e times the last), got {rate!r}"
            )
        return np.exp(rate * (position - (num_clients - 1)))
    raise ConfigError(f"size_skew must be one of {', '.join(SIZE_SKEW_KINDS)}; got {kind!r}")


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Whole numbers proportional to ``weights`` summing to ``total`` (largest remainder, ties to later clients)."""
    quota = total * weights / weights.sum()
    sizes: np.ndarray = np.floor(quota).astype(np.int64)
    left = total - int(sizes.sum())
    remainder = quota - sizes
    order = np.lexsort((-np.arange(weights.size), -remainder))
    sizes[order[:left]] += 1
    return sizes
