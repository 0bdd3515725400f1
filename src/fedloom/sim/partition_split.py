"""A held-out test split per client: each client's indices as (train, local test).

Personalised FL is judged on each client's *own* data: how well the global model (or
the client's fine-tuned copy) does on samples that client did not train on. The split
is part of the partition, not of training: it is seeded per client (so adding a client
does not reshuffle the others), keeps at least one training sample on every client, and
uses every sample exactly once across all clients' train and test sets. The built-in
simulations hold out this split with ``--local-test-fraction`` (``fedloom.sim.tasks``).
"""

from __future__ import annotations

import math

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for


def held_out_count(size: int, test_fraction: float) -> int:
    """How many of a client's ``size`` samples go to its test set: ``round(fraction * size)``, one always trains."""
    check_test_fraction(test_fraction)
    return min(size - 1, round(test_fraction * size)) if test_fraction > 0 and size > 0 else 0


def split_client(indices: np.ndarray, test_fraction: float, seed: int, client: int) -> tuple[np.ndarray, np.ndarray]:
    """Client ``client``'s (train, test) indices, both sorted, from the stream ``(seed, "local-test", client)``."""
    held = held_out_count(len(indices), test_fraction)
    if held == 0:
        return indices, indices[:0]
    order = rng_for(seed, "local-test", client).permutation(len(indices))
    return indices[np.sort(order[held:])], indices[np.sort(order[:held])]


def train_test_split(
    partitions: list[np.ndarray], test_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every client's (train, test) split of :func:`split_client`; together they cover each sample once."""
    check_test_fraction(test_fraction)
    return [split_client(np.asarray(part, dtype=np.int64), test_fraction, seed, k) for k, part in enumerate(partitions)]


def check_test_fraction(test_fraction: float) -> None:
    """A share in [0, 1): 0 holds nothing out, and a client never gives up all of its data."""
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not math.isfinite(test_fraction)
        or not 0 <= test_fraction < 1
    ):
        raise ConfigError(
            "test_fraction must be a number in [0, 1) (e.g. 0.2 holds out a fifth of each client), "
            f"got {test_fraction!r}"
        )
