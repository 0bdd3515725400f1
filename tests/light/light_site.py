"""A light device's trainer factory for the tests: seeded synthetic data, NumPy only (no fedloom
module but fedloom.light), so the import-isolation test can load it with everything else blocked."""

from __future__ import annotations

import time

import numpy as np

from fedloom.light import LightLogisticTrainer

FEATURES, CLASSES = 4, 3


def site_data(site: int) -> tuple[np.ndarray, np.ndarray]:
    """Device ``site``'s samples: 20 + 7·site points around class centres (sizes differ, so weights matter)."""
    rng = np.random.default_rng(1000 + site)
    n = 20 + 7 * site
    y = rng.integers(0, CLASSES, n)
    centres = np.arange(CLASSES * FEATURES, dtype=np.float64).reshape(CLASSES, FEATURES) / 4.0
    return centres[y] + rng.normal(0.0, 0.5 + 0.1 * site, (n, FEATURES)), y


class Slow:
    """A trainer that takes ``delay`` seconds more per round (a slow device, for crash timing)."""

    def __init__(self, trainer: LightLogisticTrainer, delay: float) -> None:
        self.trainer, self.delay = trainer, delay

    def fit(self, weights, config):
        time.sleep(self.delay)
        return self.trainer.fit(weights, config)


def make_trainer(site: str = "0", delay: str = "0") -> LightLogisticTrainer | Slow:
    x, y = site_data(int(site))
    trainer = LightLogisticTrainer(x, y, CLASSES)
    return Slow(trainer, float(delay)) if float(delay) > 0 else trainer


def initial_model() -> dict[str, np.ndarray]:
    return {"weight": np.zeros((CLASSES, FEATURES), np.float32), "bias": np.zeros(CLASSES, np.float32)}
