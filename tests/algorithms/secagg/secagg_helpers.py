"""Shared builders for the secure-aggregation tests: real model shapes and the plain FedAvg
they must match."""

import numpy as np

from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.local_round import LocalUpdate
from fedloom.algorithms.secagg.settings import SecAggSettings


def model_like(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A conv net's tensors: float32 conv weights, a float64 head, a 0-d temperature, BatchNorm
    running stats and the 0-d int64 ``num_batches_tracked``."""
    return {
        "conv.weight": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(0, 0.3, (8,)).astype(np.float32),
        "head.weight": rng.normal(0, 0.3, (4, 8)).astype(np.float64),
        "temperature": np.array(1.5, np.float32),
        "bn.running_mean": rng.normal(0, 1, (8,)).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 2, (8,)).astype(np.float32),
        "bn.num_batches_tracked": np.array(120, np.int64),
    }


def local_updates(global_w, rng, count, scale=0.05):
    """``count`` clients' deltas around ``global_w`` (counters advance by whole steps) and sizes."""
    updates = {}
    for i in range(count):
        delta = {}
        for name, value in global_w.items():
            if value.dtype.kind == "i":
                delta[name] = np.array(int(rng.integers(1, 40)), np.int64).reshape(value.shape)
            else:
                delta[name] = rng.normal(0, scale, value.shape).astype(value.dtype)
        updates[f"c{i:02d}"] = LocalUpdate(delta, int(rng.integers(1, 500)))
    return updates


def fedavg_delta(updates, names):
    """The plain weighted mean of the survivors' deltas, in float64."""
    total = sum(updates[c].num_samples for c in names)
    return {
        key: sum(updates[c].num_samples * np.asarray(updates[c].delta[key], np.float64) for c in names) / total
        for key in updates[names[0]].delta
    }


def layout_for(global_w, **settings):
    s = SecAggSettings(**settings)
    return s, RingLayout(global_w, s)
