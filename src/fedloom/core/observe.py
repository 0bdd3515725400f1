"""What a run reports as it goes, and the one protocol every watcher implements.

The store log, the progress printer and (next) tracking sinks such as TensorBoard or
MLflow are all :class:`RoundObserver` s: told when a run starts, after every round,
and when it ends. They receive plain values, so a watcher needs nothing of the code
that runs the rounds, and simulation and deployment can feed the same watchers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RoundSummary:
    """One round: how many clients took part and every metric measured (train and eval)."""

    round: int
    num_selected: int
    num_updates: int
    num_samples: int
    metrics: Mapping[str, float]
    seconds: float
    #: client id -> that client's evaluation (when clients are evaluated)
    per_client: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: client id (or ``"simulation"``) -> its system metrics (:mod:`fedloom.core.system_metrics`)
    system: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """The run being watched (``run_id`` is None when nothing is stored)."""

    run_id: str | None
    name: str
    kind: str
    rounds: int
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    #: ``DIR`` of a ``--home DIR`` hint when the store is not where the CLI looks by default
    store_hint: str = ""


@dataclass(frozen=True)
class RunEnd:
    """How a run ended: ``finished``, ``failed`` or ``interrupted``, and its last metrics."""

    status: str
    rounds_completed: int
    metrics: Mapping[str, float] = field(default_factory=dict)


class RoundObserver(Protocol):
    """Told about a run as it goes; implementations must not raise for ordinary values."""

    def on_start(self, run: RunInfo) -> None: ...

    def on_round(self, summary: RoundSummary) -> None: ...

    def on_finish(self, run: RunInfo, end: RunEnd) -> None: ...


__all__ = ["RoundObserver", "RoundSummary", "RunEnd", "RunInfo"]
