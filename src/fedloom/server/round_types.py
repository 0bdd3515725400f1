"""What the round engine hands out and reports: a round's task, a closed round's outcome, and
the recorder protocol it reports to. Apart from the engine's state machine so that the
recorders (the store adapter, the tracking watchers, tests' doubles) depend on these small
types only; :mod:`fedloom.server.engine` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fedloom.algorithms.server_opt import ServerOptState
from fedloom.core.update import UpdateReport
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class RoundTask:
    """What one round asks of its clients: the global model and who should train it."""

    round: int
    global_weights: Weights
    selected: tuple[str, ...]


@dataclass(frozen=True)
class RoundOutcome:
    """The result of a closed round; ``server_opt_state`` is the server optimiser's state after it
    (None without one), which the recorder stores with the global model so a resume continues it."""

    round: int
    weights: Weights
    num_updates: int
    num_samples: int
    client_metrics: Mapping[str, float]
    missing: tuple[str, ...]
    num_rejected: int
    seconds: float
    server_opt_state: ServerOptState | None = None


class RoundSynthesis(Protocol):
    """Turns a closed round's own aggregate into the model the next round starts from.

    Used by an aggregator that is one cluster of a federation
    (:mod:`fedloom.server.semi_global_rounds`): the engine's aggregate is the cluster's
    model, and the returned outcome carries the semi-global model. Called before the
    engine changes any state, so a failure leaves the round open."""

    def synthesise(self, outcome: RoundOutcome) -> RoundOutcome: ...


class RoundRecorder(Protocol):
    """Where the engine reports what happened (a Store adapter, a logger, a test double)."""

    def round_opened(self, round: int, selected: Sequence[str]) -> None: ...

    def update_accepted(self, report: UpdateReport, weights: Weights | None) -> None: ...

    def update_rejected(self, round: int | None, client_id: str | None, code: str, reason: str) -> None: ...

    def round_closed(self, outcome: RoundOutcome) -> None: ...

    def round_abandoned(self, round: int, num_updates: int, num_samples: int) -> None: ...

    def version_made(self, outcome: RoundOutcome) -> None: ...
