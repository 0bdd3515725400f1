"""Asynchronous rounds in simulation: the deployed FedBuff/FedAsync lifecycle on a simulated clock.

``concurrency`` clients train at once, each on the global model current when it started
(what :meth:`AsyncLifecycle.task_for` hands a deployed agent: the same round, the same
fit config and seed). A client's update arrives after its simulated training time;
arrivals are submitted to the lifecycle in time order and it is ticked after each, so a
straggler's update arrives stale and is weighted as deployed. Clients are trained
through the executor, a batch of the clients launched at the same instant at a time.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedloom.core.errors import ClientError, RejectedUpdateError
from fedloom.core.fit import FitConfig
from fedloom.core.rng import rng_for
from fedloom.server.rounds import AsyncLifecycle, RoundClosed
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.executor import ClientFailure, ClientFn, Executor, ExecutorResult, MergedUpdates
from fedloom.sim.sync_loop import TrainedRound


@dataclass(order=True)
class _InFlight:
    finish: float
    order: int
    client_id: str = field(compare=False)
    result: ExecutorResult = field(compare=False)


class AsyncLoop:
    """Advances an asynchronous run one version at a time (see the module docstring)."""

    def __init__(
        self,
        lifecycle: AsyncLifecycle,
        executor: Executor,
        client_fn: ClientFn,
        local_context: Callable[[FitConfig], FitConfig],
        environment: SimEnvironment,
        concurrency: int,
        seed: int,
        fail_on_client_error: bool,
    ) -> None:
        self.lifecycle = lifecycle
        self.executor = executor
        self.client_fn = client_fn
        self.local_context = local_context
        self.environment = environment
        self.concurrency = concurrency
        self.fail_on_client_error = fail_on_client_error
        self.now = 0.0
        self._rng = rng_for(seed, "async-selection")
        self._idle = {str(i) for i in range(len(environment.sizes))}
        self._in_flight: list[_InFlight] = []
        self._order = 0

    def run_round(self) -> TrainedRound:
        """Deliver arrivals until the next version is made."""
        started = time.perf_counter()
        start_weights = self.lifecycle.global_weights
        self._launch()
        while self._in_flight:
            job = heapq.heappop(self._in_flight)
            self.now = job.finish
            self._idle.add(job.client_id)
            self._deliver(job.result)
            closed = [e for e in self.lifecycle.tick(self.now) if isinstance(e, RoundClosed)]
            self._launch()
            if closed:
                end = closed[-1]
                return TrainedRound(end, end.outcome.num_updates, start_weights, started, self.now)
        raise ClientError(
            f"version {self.lifecycle.current_round}: no client can train and the buffer holds"
            f" {self.lifecycle.received_count()} update(s) (too many failing clients for buffer_size)"
        )

    def _launch(self) -> None:
        """Top the clients in flight up to ``concurrency`` (a client trains once per version)."""
        picked: list[str] = []
        while len(self._in_flight) + len(picked) < self.concurrency:
            candidates = sorted((c for c in self._idle if self.lifecycle.may_train(c)), key=int)
            if not candidates:
                break
            pick = str(self._rng.choice(candidates))
            self._idle.discard(pick)
            picked.append(pick)
        if not picked:
            return
        configs: dict[str, FitConfig] = {}
        for cid in picked:
            task = self.lifecycle.task_for(cid)
            assert task.fit is not None
            configs[cid] = self.local_context(task.fit)
        round_no = self.lifecycle.current_round
        weights = self.lifecycle.global_weights
        for result in self.executor.run_round(round_no, weights, configs, self.client_fn, False):
            assert not isinstance(result, MergedUpdates)
            finish = self.now + self.environment.seconds(result.client_id)
            heapq.heappush(self._in_flight, _InFlight(finish, self._order, result.client_id, result))
            self._order += 1

    def _deliver(self, result: ExecutorResult) -> None:
        if isinstance(result, ClientFailure):
            self.lifecycle.reject(result.client_id, result.code, result.message)
            if self.fail_on_client_error:
                raise ClientError(f"client {result.client_id} failed: {result.message}\n{result.details}")
            return
        assert not isinstance(result, MergedUpdates)
        try:
            self.lifecycle.submit(result)
        except RejectedUpdateError:
            if self.fail_on_client_error:
                raise
