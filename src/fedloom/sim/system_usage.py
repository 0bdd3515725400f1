"""System metrics of a simulated round: what each trained client cost, and the simulating process.

Only what is cheap to know is measured, so a simulation does not slow down:

- per delivering client: ``bytes_down`` (the global model's tensor bytes it was sent)
  and ``bytes_up`` (its update's tensor bytes; for updates a worker merged, the global
  model's size, which every mergeable strategy's updates share), and ``seconds_train``
  with the sequential executor (the time from one client's result to the next is its
  trainer's construction and fit; parallel workers' results arrive as they finish, so
  no per-client time is claimed for them);
- for client id ``"simulation"``: the process's ``cpu_percent`` over the round and its
  ``memory_rss_bytes``.

Nothing is serialized to count bytes: they are the tensors' ``nbytes``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fedloom.client.round_meter import tensor_bytes
from fedloom.client.system_sampler import SystemSampler
from fedloom.core.system_metrics import SIMULATION_ID
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.sim.executor import ExecutorResult, MergedUpdates

#: client id -> {system metric name: value} for one round
RoundUsage = dict[str, dict[str, float]]


class SimSystemMeter:
    """Collects a round's figures while the executor's results are drawn."""

    def __init__(self) -> None:
        self._sampler = SystemSampler()

    def draw(
        self, results: Iterator[ExecutorResult], global_weights: Weights, per_client_time: bool
    ) -> tuple[list[ExecutorResult], RoundUsage]:
        """Every result of ``results`` and the round's figures (see the module docstring)."""
        model_bytes = float(tensor_bytes(global_weights))
        usage: RoundUsage = {}
        drawn: list[ExecutorResult] = []
        last = time.perf_counter()
        for result in results:
            now = time.perf_counter()
            drawn.append(result)
            for client_id, up in _uploads(result, model_bytes):
                usage[client_id] = {"bytes_down": model_bytes, "bytes_up": up}
                if per_client_time and isinstance(result, ClientUpdate):
                    usage[client_id]["seconds_train"] = now - last
            last = now
        usage[SIMULATION_ID] = self._sampler.sample()
        return drawn, usage


def _uploads(result: ExecutorResult, model_bytes: float) -> list[tuple[str, float]]:
    if isinstance(result, ClientUpdate):
        return [(result.client_id, float(tensor_bytes(result.weights)))]
    if isinstance(result, MergedUpdates):
        return [(report.client_id, model_bytes) for report in result.reports]
    return []  # a failed client sent nothing
