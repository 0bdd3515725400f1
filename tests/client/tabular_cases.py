"""Synthetic tables for the tabular tests: Gaussian classes, optionally imbalanced (e.g. 95/5)."""

from __future__ import annotations

import numpy as np


def gaussian_table(
    sizes: list[int], features: int = 8, separation: float = 1.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``sizes[c]`` rows of class c drawn from N(separation · e_c-ish mean, I), shuffled; float32 x, int64 y."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(sizes), features))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    x = np.concatenate([rng.normal(size=(n, features)) + means[c] for c, n in enumerate(sizes)])
    y = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(sizes)])
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]
