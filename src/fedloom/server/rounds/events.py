"""What a round lifecycle reports: the task of one client, and the events of a tick.

Events are plain values: the deployed aggregator logs them and wakes long-polls; the
simulation reads them to know when to train, evaluate and stop. Neither needs to know
how the lifecycle decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedloom.core.fit import FitConfig
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundOutcome

TaskState = Literal["train", "wait", "finished"]


@dataclass(frozen=True)
class ClientTask:
    """What one client should do now: train ``round`` with ``fit`` (by ``deadline``), wait, or stop."""

    state: TaskState
    round: int
    fit: FitConfig | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class RoundOpened:
    round: int
    selected: tuple[str, ...]
    global_weights: Weights
    deadline: float | None


@dataclass(frozen=True)
class RoundClosed:
    """A round (sync) or a buffer (async: ``round`` is the new version) became a global model."""

    outcome: RoundOutcome


@dataclass(frozen=True)
class RoundAbandoned:
    round: int
    num_updates: int


@dataclass(frozen=True)
class DeadlineExtended:
    round: int
    received: int
    deadline: float


@dataclass(frozen=True)
class StageAdvanced:
    """A secure-aggregation round moved to ``stage`` (due by ``deadline``); ``dropped`` did not answer the last."""

    round: int
    stage: str
    deadline: float
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class RunFinished:
    rounds_completed: int


Event = RoundOpened | RoundClosed | RoundAbandoned | DeadlineExtended | StageAdvanced | RunFinished
