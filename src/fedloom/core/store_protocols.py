"""The store contract, once: small role protocols that the server, the simulation and the CLI depend on.

``fedloom.server`` and ``fedloom.sim`` must not depend on ``fedloom.store`` (layers point
downwards), so they are written against these structural types;
:class:`fedloom.store.SqlStore` implements all of them and tests may pass a fake that
implements only the role under test. Each role is what one kind of caller needs:

- :class:`RunWriter` — what the round recorder and the simulation write
  (:class:`LocalModelsWriter`: a round's local models in one write, where a store can);
- :class:`RunReader` — what a resuming aggregator or simulation (and the CLI) reads back;
- :class:`AccessStore` — join tokens, agents and their credentials (deployments only);
- :class:`DeploymentStore` — the three together, plus reopening a run and a health check:
  what the deployed aggregator is given.

Every write is one atomic transaction or raises :class:`~fedloom.core.errors.StoreError`;
readers return the frozen records of :mod:`fedloom.core.records`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedloom.core.agent_logs import AgentLogStore
from fedloom.core.lineage import LineageEntry
from fedloom.core.records import (
    AgentRecord,
    ClientRecord,
    MetricRecord,
    ModelRecord,
    RoundRecord,
    RunRecord,
    TokenRecord,
)
from fedloom.core.weights import Weights


@runtime_checkable
class RunWriter(Protocol):
    """The writes of a run: its row, its clients, its rounds, models, metrics and rejections."""

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

    def save_global_model(
        self,
        run_id: str,
        round: int,
        weights: Weights,
        num_samples: int,
        server_state: tuple[Mapping[str, np.ndarray], int] | None = None,
    ) -> int:
        """Store the round's single global model, with the server optimiser's ``(tensors, step)``
        after the round in the same transaction when given; returns the model's id."""
        ...

    def save_server_state(self, run_id: str, round: int, state_tensors: Mapping[str, np.ndarray], step: int) -> None:
        """Store the server optimiser's state after ``round`` (whose global model is already stored)."""
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
        payload: bytes | None = None,
    ) -> int:
        """Store one client's accepted update for a round (``payload``: its bytes as received,
        kept as they are); returns its id."""
        ...

    def record_metrics(
        self, run_id: str, round: int, metrics: Mapping[str, float], scope: str = "server", client_id: str | None = None
    ) -> None:
        """Record named values measured in ``round`` by the server or a client."""
        ...

    def record_rejection(self, run_id: str, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        """Record an update or request the server refused, with its reason."""
        ...


@dataclass(frozen=True)
class LocalModelWrite:
    """One accepted update to store: :meth:`RunWriter.save_local_model`'s arguments after ``run_id``."""

    round: int
    client_id: str
    weights: Weights | None
    num_samples: int
    metrics: Mapping[str, float]
    sha256: str | None = None
    keep_blob: bool = True
    payload: bytes | None = None


@runtime_checkable
class LocalModelsWriter(Protocol):
    """A store that writes many local models in one transaction (a simulated round's, at its end):
    on SQLite one commit per update was ~0.7 ms, most of a 1,000-client round's recording."""

    def save_local_models(self, run_id: str, models: Sequence[LocalModelWrite]) -> list[int]:
        """Store every update of ``models`` (each as ``save_local_model`` would, same checks and
        refusals) in one transaction: all or none; their ids in order."""
        ...


@runtime_checkable
class RunReader(Protocol):
    """The reads a resuming aggregator (and the CLI) makes of a run's record."""

    def find_run(self, name: str, kind: str = "deployment") -> RunRecord | None:
        """The newest run with this name and kind, or None."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id (or the only id starting with it); an unknown one is a ``StoreError``."""
        ...

    def list_clients(self, run_id: str) -> Sequence[ClientRecord]:
        """The run's registered clients in registration order."""
        ...

    def list_rounds(self, run_id: str) -> Sequence[RoundRecord]:
        """Every round of the run in round order."""
        ...

    def list_global_models(self, run_id: str) -> Sequence[ModelRecord]:
        """Every global model of the run in round order."""
        ...

    def load_global_model(self, run_id: str, round: int) -> Weights:
        """The weights of a round's global model, verified against its content hash."""
        ...

    def list_local_models(self, run_id: str, round: int | None = None) -> Sequence[ModelRecord]:
        """The run's local models (of one round if given), by round then client id."""
        ...

    def load_local_model(self, run_id: str, round: int, client_id: str) -> Weights:
        """A client's stored update of a round."""
        ...

    def metrics(self, run_id: str, scope: str | None = None) -> Sequence[MetricRecord]:
        """Every metric of the run (of one scope if given)."""
        ...

    def metric_series(self, run_id: str, name: str, scope: str = "server") -> Sequence[tuple[int, float]]:
        """``(round, value)`` pairs of one metric, in round order."""
        ...

    def load_server_state(self, run_id: str, round: int) -> tuple[Weights, int] | None:
        """The server optimiser's ``(tensors, step)`` stored with ``round``'s global model, or None."""
        ...


@runtime_checkable
class AccessStore(Protocol):
    """Join tokens, the agents registered with them, and the authentication of their credentials."""

    def verify_join_token(self, token: str) -> TokenRecord | None:
        """The active token with this text, or None."""
        ...

    def register_agent(self, run_id: str, name: str, token: TokenRecord) -> tuple[AgentRecord, str]:
        """Register agent ``name`` in the run; returns it with a fresh credential."""
        ...

    def authenticate(self, credential: str) -> AgentRecord | None:
        """The agent holding this credential, or None (unknown, replaced, or its token revoked)."""
        ...

    def revoked_agent_ids(self, run_id: str) -> set[str]:
        """The run's agents whose token is revoked."""
        ...

    def list_agents(self, run_id: str) -> Sequence[AgentRecord]:
        """The run's agents in registration order."""
        ...


@runtime_checkable
class DeploymentStore(RunWriter, RunReader, AccessStore, AgentLogStore, Protocol):
    """What the deployed aggregator is given: every role, plus reopening its run and a health check."""

    def reopen_run(self, run_id: str) -> None:
        """Set a run back to ``running`` (a restarted aggregator resumes it)."""
        ...

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""
        ...

    def lineage_entry(self, run_id: str, round: int) -> LineageEntry | None:
        """Global model ``round``'s stored lineage link with the fields it hashes (None if unchained)."""
        ...
