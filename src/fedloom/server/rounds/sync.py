"""Synchronous rounds driven by a clock: the round engine plus the close policy.

:class:`SyncRounds` is what both sides run. The deployed aggregator calls
:meth:`SyncRounds.tick` with wall-clock time after every request and on a timer; the
simulation calls it with simulated time at every arrival and deadline. ``tick`` applies
the :class:`ClosePolicy` to the open round (close early, aggregate, extend or abandon at
the deadline), opens the next round when allowed, and reports what happened as events.
Every store write goes through the engine's recorder, so both sides record alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.engine import EngineState, RoundEngine, RoundTask
from fedloom.server.rounds.events import (
    ClientTask,
    DeadlineExtended,
    Event,
    RoundAbandoned,
    RoundClosed,
    RoundOpened,
    RunFinished,
)
from fedloom.server.rounds.policy import ClosePolicy, Decision


class SyncRounds:
    """One synchronous federation: select, collect, close by policy, advance."""

    mode = "sync"

    def __init__(self, engine: RoundEngine, policy: ClosePolicy) -> None:
        self.engine = engine
        self.policy = policy
        self._deadline: float | None = None
        self._finish_reported = False

    # -- state -------------------------------------------------------------------
    @property
    def current_round(self) -> int:
        """The open round, or the next one to open."""
        return self.engine.current_round

    @property
    def finished(self) -> bool:
        return self.engine.state is EngineState.FINISHED

    @property
    def rounds_completed(self) -> int:
        """Rounds closed or abandoned (``current_round - 1``, never beyond ``max_rounds``)."""
        done = self.current_round - 1
        top = self.engine.max_rounds
        return done if top is None else min(done, top)

    @property
    def open_task(self) -> RoundTask | None:
        """The collecting round's task, or None between rounds."""
        return self.engine.open_task

    @property
    def deadline(self) -> float | None:
        return self._deadline if self.open_task is not None else None

    @property
    def global_weights(self) -> Weights:
        return self.engine.global_weights

    def received_count(self) -> int:
        return self.engine.received()

    def stage_info(self, client_id: str) -> dict[str, Any] | None:
        """The extra stage ``client_id`` owes the open round (secure aggregation overrides it), or None."""
        return None

    # -- clients -----------------------------------------------------------------
    def add_client(self, client_id: str, num_samples: int | None = None) -> None:
        """Make a client eligible from the next selection on."""
        self.engine.register_client(client_id, num_samples)

    def remove_client(self, client_id: str) -> None:
        """Never select ``client_id`` again; the open round stops waiting for it."""
        self.engine.unregister_client(client_id)

    def task_for(self, client_id: str) -> ClientTask:
        """What ``client_id`` should do now."""
        if self.finished:
            return ClientTask("finished", self.rounds_completed)
        task = self.open_task
        if task is None:
            return ClientTask("wait", self.current_round)
        if client_id in task.selected and client_id not in self.engine.received_from():
            return ClientTask("train", task.round, self.engine.fit_config(client_id), self._deadline)
        return ClientTask("wait", task.round, None, self._deadline)

    # -- updates -----------------------------------------------------------------
    def submit(self, update: ClientUpdate) -> None:
        """Accept an update into the open round or raise (and record) ``RejectedUpdateError``."""
        self.engine.submit(update)

    def reject(self, client_id: str, code: str, reason: str) -> None:
        """Record that a selected client delivered nothing usable (crashed, dropped out)."""
        self.engine.reject_client(client_id, code, reason)

    def resume(self, selected: Sequence[str], opened_at: float, updates: Iterable[ClientUpdate]) -> None:
        """Re-open a recorded round with its recorded selection, opening time and updates
        (a restarted aggregator); the updates are already stored, so nothing is recorded."""
        recorder, self.engine.recorder = self.engine.recorder, None
        try:
            self.engine.open_round(selected=selected)
            for update in updates:
                self.engine.submit(update)
        finally:
            self.engine.recorder = recorder
        self._deadline = self.policy.first_deadline(opened_at)

    # -- time --------------------------------------------------------------------
    def tick(self, now: float, *, may_open: bool = True) -> list[Event]:
        """Apply the close policy at ``now``, open the next round if ``may_open``, report events."""
        events: list[Event] = []
        if self.open_task is not None:
            events.extend(self._decide(now))
        if self.engine.state is EngineState.IDLE and may_open:
            task = self.engine.open_round()
            self._deadline = self.policy.first_deadline(now)
            events.append(RoundOpened(task.round, task.selected, task.global_weights, self._deadline))
        if self.finished and not self._finish_reported:
            self._finish_reported = True
            events.append(RunFinished(self.rounds_completed))
        return events

    def _decide(self, now: float) -> list[Event]:
        task = self.open_task
        assert task is not None
        decision = self.policy.decide(self.engine.received(), len(task.selected), now, self._deadline)
        if decision is Decision.CLOSE:
            outcome = self.engine.close_round(min_updates=self.policy.minimum(len(task.selected)))
            self._deadline = None
            return [RoundClosed(outcome)]
        if decision is Decision.ABANDON:
            received = self.engine.received()
            number = self.engine.abandon_round()
            self._deadline = None
            return [RoundAbandoned(number, received)]
        if decision is Decision.EXTEND:
            assert self._deadline is not None
            self._deadline = self.policy.next_deadline(self._deadline, now)
            return [DeadlineExtended(task.round, self.engine.received(), self._deadline)]
        return []
