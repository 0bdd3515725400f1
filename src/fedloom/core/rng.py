"""Reproducible randomness: one independent stream per (seed, round, purpose, ...).

Deriving every generator from a tuple instead of sharing one global generator means
that the clients sampled in round 7 do not depend on how many random numbers round 6
happened to draw, so executors and restarts cannot change the experiment.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_key(seed: int, *parts: int | str) -> int:
    """A 63-bit integer derived from the seed and the parts; stable across processes and runs."""
    text = ":".join([str(int(seed)), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng_for(seed: int, *parts: int | str) -> np.random.Generator:
    """A NumPy generator for (seed, *parts), e.g. ``rng_for(seed, "sample", round)``."""
    return np.random.default_rng(stream_key(seed, *parts))
