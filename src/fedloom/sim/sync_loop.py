"""Synchronous rounds in simulation: the deployed lifecycle, ticked by a simulated clock.

Each round the loop trains the clients the lifecycle selected (through the executor),
then delivers their updates to :class:`~fedloom.server.rounds.SyncRounds` in simulated
arrival order, ticking it at every arrival and every deadline in between, just as the
aggregator ticks after every upload and on its timer. So early close at the threshold,
deadlines, ``extend`` and ``abandon`` behave as deployed; a client that arrives after its
round closed is refused (``wrong_round``) and recorded, as a late agent would be.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fedloom.core.errors import ClientError, RejectedUpdateError
from fedloom.core.fit import FitConfig
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.rounds import DeadlineExtended, Event, RoundAbandoned, RoundClosed, RoundOpened, SyncRounds
from fedloom.sim.adversary import Adversary
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.executor import ClientFailure, ClientFn, Executor, ExecutorResult, MergedUpdates, SequentialExecutor
from fedloom.sim.secure_delivery import SecureDelivery
from fedloom.sim.system_usage import RoundUsage, SimSystemMeter

RoundEnd = RoundClosed | RoundAbandoned


@dataclass(frozen=True)
class TrainedRound:
    """One simulated round (or async version): its start model, how it ended, and when
    (simulated seconds, if timed); ``started`` is the wall-clock ``perf_counter``."""

    end: RoundEnd
    num_selected: int
    start_weights: Weights
    started: float
    sim_seconds: float | None
    #: client id (or ``"simulation"``) -> system metrics of the round (sync rounds only)
    system: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: what the executor reports about the round (the Ray executor's ``clients_retried``)
    executor_metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Poison:
    adversary: Adversary
    malicious: frozenset[int]
    seed: int


class SyncLoop:
    """Runs one round at a time over a :class:`SyncRounds` (see the module docstring)."""

    def __init__(
        self,
        lifecycle: SyncRounds,
        executor: Executor,
        client_fn: ClientFn,
        fit_config: Callable[[str], FitConfig],
        environment: SimEnvironment | None,
        fail_on_client_error: bool,
        poison: Poison | None = None,
        now: float = 0.0,
        secure: SecureDelivery | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.executor = executor
        self.client_fn = client_fn
        self.fit_config = fit_config
        self.environment = environment
        self.fail_on_client_error = fail_on_client_error
        self.poison = poison
        self.now = now  # simulated seconds (a resumed run continues where it stood)
        self.secure = secure  # deliver through secure aggregation (fedloom.sim.secure_delivery)
        self._opened: RoundOpened | None = None
        self._end: RoundEnd | None = None
        self._meter = SimSystemMeter()
        self._usage: RoundUsage = {}
        self._executor_metrics: dict[str, float] = {}

    def _take(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, RoundOpened):
                self._opened = event
            elif isinstance(event, (RoundClosed, RoundAbandoned)):
                self._end = event

    def run_round(self) -> TrainedRound:
        """Open (if needed), train, deliver in time order, and return how the round ended."""
        started = time.perf_counter()
        if self._opened is None:
            self._take(self.lifecycle.tick(self.now))
        opened, self._opened, self._end = self._opened, None, None
        assert opened is not None, "the lifecycle opened no round"
        timed = self._train(opened)
        if self.secure is not None:
            self._deliver_secure(self.secure, timed)
        else:
            self._deliver(opened, timed)
        self._finish_by_deadlines(opened)
        assert self._end is not None
        sim_seconds = self.now if self.environment else None
        selected = len(opened.selected)
        return TrainedRound(
            self._end, selected, opened.global_weights, started, sim_seconds, self._usage, self._executor_metrics
        )

    def _train(self, opened: RoundOpened) -> list[tuple[float, ExecutorResult]]:
        """Every delivering client's result with its arrival time (dropouts are refused here)."""
        if self.environment is None:
            arriving = [(self.now, cid) for cid in opened.selected]
        else:
            arrivals, dropped = self.environment.arrivals(opened.round, opened.selected, self.now)
            for cid in dropped:
                self.lifecycle.reject(cid, "dropped", "the client dropped out of the round (simulated)")
            arriving = [(a.time, a.client_id) for a in arrivals]
        when = {cid: t for t, cid in arriving}
        configs = {cid: self.fit_config(cid) for _, cid in arriving}
        merge = self.lifecycle.engine.strategy.mergeable and self.poison is None and self.environment is None
        merge = merge and self.secure is None  # secure aggregation masks each client's own update
        drawn = self.executor.run_round(opened.round, opened.global_weights, configs, self.client_fn, merge)
        inner = getattr(self.executor, "executor", self.executor)  # the run's executor, under its local-context wrapper
        sequential = isinstance(inner, SequentialExecutor)
        results, self._usage = self._meter.draw(drawn, opened.global_weights, per_client_time=sequential)
        reported = getattr(inner, "round_metrics", None)  # executors that have figures of their own
        self._executor_metrics = dict(reported()) if callable(reported) else {}
        if self.poison is not None:
            results = self._poisoned(opened, results)
        return sorted(((self._arrival(r, when), r) for r in results), key=lambda item: item[0])

    def _arrival(self, result: ExecutorResult, when: dict[str, float]) -> float:
        if isinstance(result, MergedUpdates):
            return self.now
        return when.get(result.client_id, self.now)

    def _poisoned(self, opened: RoundOpened, results: list[ExecutorResult]) -> list[ExecutorResult]:
        """Replace the malicious clients' updates with their attack (which sees the whole round)."""
        assert self.poison is not None
        updates = [r for r in results if isinstance(r, ClientUpdate)]
        others = [r for r in results if not isinstance(r, ClientUpdate)]
        attacked = self.poison.adversary.poison(
            opened.round, opened.global_weights, updates, self.poison.malicious, self.poison.seed
        )
        return [*attacked, *others]

    def _deliver(self, opened: RoundOpened, timed: Sequence[tuple[float, ExecutorResult]]) -> None:
        for moment, group in itertools.groupby(timed, key=lambda item: item[0]):
            self._deadlines_until(moment)
            for _, result in group:
                self._submit(result, late=self._end is not None)
            if self._end is None:
                self.now = max(self.now, moment)
                self._take(self.lifecycle.tick(self.now))

    def _deliver_secure(self, secure: SecureDelivery, timed: Sequence[tuple[float, ExecutorResult]]) -> None:
        """Failures are recorded as usual; the trained updates reach the server only as a masked sum."""
        updates = [result for _, result in timed if isinstance(result, ClientUpdate)]
        for _, result in timed:
            if not isinstance(result, ClientUpdate):
                self._submit(result, late=False)
        self._take(secure.deliver(self.lifecycle, updates, self.now))

    def _deadlines_until(self, moment: float) -> None:
        """Fire every deadline of the open round that passes before ``moment``."""
        while self._end is None and (deadline := self.lifecycle.deadline) is not None and deadline <= moment:
            self.now = deadline
            self._take(self.lifecycle.tick(deadline))

    def _submit(self, result: ExecutorResult, late: bool) -> None:
        if isinstance(result, MergedUpdates):
            self.lifecycle.engine.submit_merged(result.reports, result.partial)
            return
        if isinstance(result, ClientFailure):
            if not late:
                self.lifecycle.reject(result.client_id, result.code, result.message)
            if self.fail_on_client_error:
                raise ClientError(
                    f"client {result.client_id} failed in round {result.round}: {result.message}\n{result.details}"
                )
            return
        try:
            self.lifecycle.submit(result)  # a late update is refused and recorded, as deployed
        except RejectedUpdateError:
            if self.fail_on_client_error and not late:
                raise

    def _finish_by_deadlines(self, opened: RoundOpened) -> None:
        """No client is left to deliver: let the open round's deadlines decide, or say why it cannot."""
        while self._end is None:
            deadline = self.lifecycle.deadline
            if deadline is None:
                needed = self.lifecycle.policy.required(len(opened.selected))
                raise ClientError(
                    f"round {opened.round}: only {self.lifecycle.received_count()} of {len(opened.selected)} clients "
                    f"returned a usable update; the strategy needs {needed}"
                    " (lower RoundCriteria.threshold / min_updates to tolerate failing clients)"
                )
            self.now = deadline
            events = self.lifecycle.tick(deadline)
            self._take(events)
            if self._end is None and any(isinstance(e, DeadlineExtended) for e in events):
                raise ClientError(
                    f"round {opened.round}: its deadline passed with {self.lifecycle.received_count()} update(s) and"
                    " on_deadline='extend' extends it, but no selected client is left to deliver"
                    " (lower min_updates, or use on_deadline='aggregate' or 'abandon')"
                )
