"""A light device whose model has the tensors real models have: a float32 weight, BatchNorm's
0-d int64 ``num_batches_tracked``, an int32 counter that differs per device, float64 at the top
of its range and at its very bottom (subnormal). Its "training" is deterministic in (device,
round, incoming model), so two topologies fed the same models give the same updates."""

from __future__ import annotations

import threading

import numpy as np

#: the largest magnitude any device produced per tensor (the equivalence tolerance scales with it)
SEEN: dict[str, float] = {}
_seen_lock = threading.Lock()


def initial_model() -> dict[str, np.ndarray]:
    return {
        "w": np.zeros((3, 4), np.float32),
        "bn.running_var": np.ones(4, np.float32),
        "bn.num_batches_tracked": np.array(0, np.int64),
        "counter": np.zeros(2, np.int32),
        "huge": np.array(0.0, np.float64),
        "tiny": np.zeros(3, np.float64),
    }


class ShapesTrainer:
    def __init__(self, site: int) -> None:
        self.site = site

    def samples(self) -> int:
        return 10 + 13 * self.site

    def fit(self, weights, config):
        s, rng = self.site, np.random.default_rng(7919 * self.site + config.round)
        out = {
            "w": (weights["w"] * 0.9 + rng.normal(0.0, 1.0 + s, (3, 4))).astype(np.float32),
            "bn.running_var": (weights["bn.running_var"] * 0.5 + rng.uniform(0.5, 2.0, 4)).astype(np.float32),
            "bn.num_batches_tracked": np.array(weights["bn.num_batches_tracked"] + 5, np.int64),
            "counter": (weights["counter"] + np.array([s, 3 * s + 1])).astype(np.int32),
            "huge": np.array(weights["huge"] * 0.5 + 1.7e308 / 8 * (s + 1), np.float64),
            "tiny": np.array([1e-300 * (s + 1), 5e-324 * s, -1e-310 * s], np.float64) + weights["tiny"] * 0.5,
        }
        with _seen_lock:
            for name, value in out.items():
                SEEN[name] = max(SEEN.get(name, 0.0), float(np.max(np.abs(value.astype(np.float64)))))
        return out, self.samples(), {"loss": 1.0 / (s + 1)}


def make_trainer(site: str = "0") -> ShapesTrainer:
    return ShapesTrainer(int(site))
