"""The Ray executor: a simulation's clients trained on the nodes of a Ray cluster.

``RayExecutor(address=None, resources=ClientResources(cpus=1), num_cpus=None,
max_retries=3)`` (CLI: ``fedloom sim --executor ray [--ray-address ADDR]
[--ray-cpus-per-client C] [--ray-gpus-per-client G] [--ray-memory-per-client 2GB]``)
runs the same ``client_fn``, sampling and seeds as the other executors:

- ``address`` joins a running cluster (``auto``, ``HOST:6379`` or ``ray://HOST:10001``);
  without one a local Ray is started with ``num_cpus`` CPUs (default: one per core) and
  shut down when the executor closes. A Ray this process already joined is used as is.
- Each node runs as many actors as it has room for clients (:mod:`fedloom.sim.ray_slots`);
  the data travels to each node once, through Ray's object store; rounds are run by
  :mod:`fedloom.sim.ray_round` (per-node partial sums, retries of lost clients).

What is identical to the sequential executor for a fixed seed: the sampled clients,
their ``FitConfig`` (seeds included), the data each trains on, and each local model
(bitwise, as with the parallel executor: same seed, single-threaded kernels). Without
pre-merging (non-mergeable aggregators, adversaries, simulated clocks) results reach the
engine in the sequential order, so the aggregate, the final weights and the history are
bitwise identical too. With pre-merging (FedAvg-type rounds) partial sums are folded in
an order that depends on which actor trained which client: the aggregate then equals
the sequential one to ~1e-7 relative, like the parallel executor's.

Ray ships ``client_fn`` to its workers with its own serializer (cloudpickle): the
simulation author's code and data going to the author's own cluster. Models and updates
travel as fedloom safetensors payloads. Join only clusters you control.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from types import ModuleType

from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.weights import Weights
from fedloom.sim.cohort.setting import parse_cohort
from fedloom.sim.executor import ClientFn, ExecutorResult
from fedloom.sim.ray_resources import ClientResources
from fedloom.sim.ray_round import RayRound, share_size
from fedloom.sim.ray_slots import SlotPool

log = logging.getLogger("fedloom.sim.ray")


def import_ray() -> ModuleType:
    """Ray, or a ConfigError naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the Ray executor needs Ray, which is not installed: run `pip install 'fedloom[ray]'`"
            " (or choose --executor sequential / parallel)"
        ) from exc
    return ray


class RayExecutor:
    """Trains each round's clients on a Ray cluster; see the module docstring."""

    def __init__(
        self,
        address: str | None = None,
        *,
        resources: ClientResources | None = None,
        num_cpus: int | None = None,
        max_retries: int = 3,
        cohort: str | int = "off",
    ) -> None:
        self._ray = import_ray()
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus of the local Ray must be >= 1, got {num_cpus} (set --ray-cpus)")
        if address is not None and num_cpus is not None:
            raise ConfigError("--ray-cpus sizes a local Ray; a cluster joined with --ray-address has its own CPUs")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries} (set --ray-retries)")
        self.address = address or None
        self.resources = resources or ClientResources()
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        #: each actor trains its share of a round as cohorts: "auto", a size N, or "off" (one at a time)
        self.cohort = parse_cohort(cohort)
        #: clients re-run over the whole run because their Ray worker or node was lost
        self.retried = 0
        self._round_retried = 0
        self._pool: SlotPool | None = None
        self._started_ray = False

    def _connect(self) -> None:
        """Join ``address``, or start a local Ray; a Ray this process already joined is kept."""
        ray = self._ray
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a simulation reports nothing home
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                cpus = self.num_cpus or max(1, len(os.sched_getaffinity(0)))
                # "local": a new Ray of its own, even where another runs on this machine
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise ConfigError(
                f"could not join the Ray cluster at {self.address!r}: {exc}; check --ray-address"
                " (auto, HOST:6379 or ray://HOST:10001) and that the cluster is running"
            ) from exc
        self._started_ray = True

    def _slots(self, client_fn: ClientFn) -> SlotPool:
        if self._pool is not None and self._pool.client_fn is not client_fn:
            self._pool.close()
            self._pool = None
        if self._pool is None:
            self._pool = SlotPool(client_fn, self.resources, self.cohort)
        self._pool.fill()
        return self._pool

    def run_round(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        client_fn: ClientFn,
        merge: bool = False,
        state_dir: str | None = None,
    ) -> Iterator[ExecutorResult]:
        self._connect()
        run = RayRound(self._slots(client_fn), round, weights, configs, merge, state_dir, self.max_retries)
        if self.cohort != "off" and configs:  # shares only where the round's model trains in cohorts
            from fedloom.sim.cohort.runner import round_takes_cohorts  # imports torch: only when cohorts may train

            first = next(iter(configs))
            if round_takes_cohorts(client_fn, first, configs[first], self.cohort):
                run.share_size = share_size(len(configs), len(run.pool.slots), self.cohort)
        try:
            yield from run.execute()
        finally:
            self.retried += run.retried
            self._round_retried = run.retried

    def round_metrics(self) -> dict[str, float]:
        """The last round's ``clients_retried`` (only when a client had to be re-run)."""
        return {"clients_retried": float(self._round_retried)} if self._round_retried else {}

    def close(self) -> None:
        """Stop the actors; shut down the Ray this executor started (a joined one stays up)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
