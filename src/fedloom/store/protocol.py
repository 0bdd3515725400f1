"""The ``Store`` protocol: the writes the round engine and the simulation driver make.

Engine and driver depend on this protocol, never on :class:`~fedloom.store.SqlStore`,
so tests can hand them an in-memory fake and a deployment can swap the backend
without touching the round logic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from fedloom.core.weights import Weights


@runtime_checkable
class Store(Protocol):
    """Persistent record of runs; every call is one atomic write or raises ``StoreError``."""

    def create_run(self, name: str, kind: str, config: Mapping[str, Any], seed: int) -> str:
        """Start a run (status ``running``) and return its id (32 hex characters)."""
        ...

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Mark a run ``finished``, ``failed`` or ``interrupted`` and keep its summary."""
        ...

    def register_client(
        self, run_id: str, client_id: str, num_samples: int | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record that a client belongs to the run; registering again changes nothing."""
        ...

    def register_clients(self, run_id: str, items: Iterable[tuple[str, int | None]]) -> None:
        """Register many ``(client_id, num_samples)`` pairs in one statement."""
        ...

    def open_round(self, run_id: str, round: int, selected: Sequence[str]) -> None:
        """Record that ``round`` started with the ``selected`` clients."""
        ...

    def close_round(
        self, run_id: str, round: int, status: str = "closed", num_updates: int = 0, num_samples: int = 0
    ) -> None:
        """Mark an open round ``closed`` (aggregated) or ``abandoned``."""
        ...

    def save_global_model(self, run_id: str, round: int, weights: Weights, num_samples: int) -> int:
        """Store the round's single global model; returns its id."""
        ...

    def save_local_model(
        self,
        run_id: str,
        round: int,
        client_id: str,
        weights: Weights | None,
        num_samples: int,
        metrics: Mapping[str, float],
        sha256: str | None = None,
        keep_blob: bool = True,
    ) -> int:
        """Store one client's accepted update for a round; returns its id."""
        ...

    def record_metrics(
        self,
        run_id: str,
        round: int,
        metrics: Mapping[str, float],
        scope: str = "server",
        client_id: str | None = None,
    ) -> None:
        """Record named values measured in ``round`` by the server or a client."""
        ...

    def record_rejection(self, run_id: str, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        """Record an update or request the server refused, with its reason."""
        ...
