"""The one round lifecycle of simulation and deployment (docs/architecture.md).

:class:`SyncRounds` and :class:`AsyncLifecycle` share one interface, :class:`Rounds`:
``task_for`` (what a client should do), ``submit`` (an update, refused with a code),
``tick`` (the clock moved: deadlines, closes, new rounds). The deployed aggregator drives
it with wall-clock time, the simulation with simulated time.
"""

from __future__ import annotations

from typing import Protocol

from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.rounds.asynchronous import AsyncLifecycle, AsyncSettings, version_outcome
from fedloom.server.rounds.events import (
    ClientTask,
    DeadlineExtended,
    Event,
    RoundAbandoned,
    RoundClosed,
    RoundOpened,
    RunFinished,
    StageAdvanced,
)
from fedloom.server.rounds.policy import DEADLINE_POLICIES, ClosePolicy, DeadlinePolicy, Decision
from fedloom.server.rounds.sync import SyncRounds


class Rounds(Protocol):
    """What both lifecycles offer; see the module docstring."""

    @property
    def mode(self) -> str: ...

    @property
    def current_round(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    @property
    def rounds_completed(self) -> int: ...

    @property
    def global_weights(self) -> Weights: ...

    def received_count(self) -> int: ...

    def task_for(self, client_id: str) -> ClientTask: ...

    def submit(self, update: ClientUpdate) -> None: ...

    def reject(self, client_id: str, code: str, reason: str) -> None: ...

    def tick(self, now: float, *, may_open: bool = True) -> list[Event]: ...


__all__ = [
    "DEADLINE_POLICIES",
    "AsyncLifecycle",
    "AsyncSettings",
    "ClientTask",
    "ClosePolicy",
    "DeadlineExtended",
    "DeadlinePolicy",
    "Decision",
    "Event",
    "RoundAbandoned",
    "RoundClosed",
    "RoundOpened",
    "Rounds",
    "RunFinished",
    "StageAdvanced",
    "SyncRounds",
    "version_outcome",
]
