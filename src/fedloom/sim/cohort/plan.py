"""Every client's batches for a round, drawn exactly as its TorchTrainer would draw them.

TorchTrainer shuffles with ``numpy.random.default_rng(config.seed)`` and takes
``epoch_batches`` epoch after epoch; the plan replays that generator per client, so a
client's batches and their order do not depend on who else is in the cohort. Step ``s``
of the cohort is every client's own step ``s``: a client with fewer samples runs out of
steps earlier (its ``length`` is 0 from then on, and it is left out of the step), and a
short last batch is padded with weight 0 (or trained in a group of its own length, see
fedloom.sim.cohort.train).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.client.batching import epoch_batches


@dataclass(frozen=True)
class BatchPlan:
    """``index[s, c, :length[s, c]]``: the rows (of the cohort's concatenated data) client ``c``
    trains on at step ``s``; the rest of the row is padding with ``weight`` 0."""

    index: np.ndarray  # (steps, clients, batch_size) int64
    weight: np.ndarray  # (steps, clients, batch_size) float32, 1 for a real sample, 0 for padding
    length: np.ndarray  # (steps, clients) int64, 0 once the client has no step left

    @property
    def steps(self) -> int:
        return int(self.index.shape[0])

    def steps_of(self, client: int) -> int:
        """How many optimiser steps client ``client`` takes (its ``local_steps``)."""
        return int(np.count_nonzero(self.length[:, client]))


def client_batches(num_samples: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """One client's batches (local indices), in TorchTrainer's order for this seed."""
    rng = np.random.default_rng(seed)
    return [idx for _ in range(epochs) for idx in epoch_batches(num_samples, batch_size, rng)]


def plan_batches(
    sizes: Sequence[int], offsets: Sequence[int], seeds: Sequence[int], epochs: Sequence[int], batch_size: int
) -> BatchPlan:
    """The cohort's plan: client ``c`` has ``sizes[c]`` rows from ``offsets[c]`` of the data."""
    batches = [client_batches(n, batch_size, e, s) for n, e, s in zip(sizes, epochs, seeds, strict=True)]
    steps = max((len(b) for b in batches), default=0)
    index = np.zeros((steps, len(sizes), batch_size), np.int64)
    weight = np.zeros((steps, len(sizes), batch_size), np.float32)
    length = np.zeros((steps, len(sizes)), np.int64)
    for c, client in enumerate(batches):
        for s, idx in enumerate(client):
            index[s, c, : len(idx)] = idx + offsets[c]
            index[s, c, len(idx) :] = offsets[c]  # padding: any of the client's own rows, weighted 0
            weight[s, c, : len(idx)] = 1.0
            length[s, c] = len(idx)
    return BatchPlan(index, weight, length)
