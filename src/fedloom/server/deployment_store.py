"""What the deployment aggregator needs from a store, as a protocol.

``fedloom.server`` may not import ``fedloom.store`` (layers point downwards: server
depends on core and algorithms only), so the aggregator is written against this
structural type; :class:`fedloom.store.SqlStore` satisfies it, and tests may pass a
fake. Records are read through read-only properties, which the store's frozen record
dataclasses provide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from fedloom.core.weights import Weights
from fedloom.server.recording import RecordingStore


class AgentLike(Protocol):
    """A registered agent (``fedloom.store.AgentRecord``)."""

    @property
    def id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


class ClientLike(Protocol):
    """A registered client with its declared data size (``fedloom.store.ClientRecord``)."""

    @property
    def client_id(self) -> str: ...

    @property
    def num_samples(self) -> int | None: ...


class RunLike(Protocol):
    """A run (``fedloom.store.RunRecord``)."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def config(self) -> Mapping[str, Any]: ...


class RoundLike(Protocol):
    """A round row (``fedloom.store.RoundRecord``)."""

    @property
    def round(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def selected(self) -> tuple[str, ...]: ...

    @property
    def opened_at(self) -> datetime: ...


class ModelLike(Protocol):
    """A stored global or local model (``fedloom.store.ModelRecord``)."""

    @property
    def id(self) -> int: ...

    @property
    def round(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def client_id(self) -> str | None: ...

    @property
    def metrics(self) -> Mapping[str, float]: ...


class MetricLike(Protocol):
    """A recorded metric (``fedloom.store.MetricRecord``)."""

    @property
    def round(self) -> int: ...

    @property
    def scope(self) -> str: ...


class DeploymentStore(RecordingStore, Protocol):
    """The store calls of the aggregator: runs, join tokens, agents, and the readers a resume needs."""

    def create_run(self, name: str, kind: str, config: Mapping[str, Any], seed: int) -> str: ...

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None: ...

    def find_run(self, name: str, kind: str = "deployment") -> RunLike | None: ...

    def reopen_run(self, run_id: str) -> None: ...

    def register_client(
        self, run_id: str, client_id: str, num_samples: int | None = None, extra: Mapping[str, Any] | None = None
    ) -> None: ...

    def list_clients(self, run_id: str) -> Sequence[ClientLike]: ...

    def verify_join_token(self, token: str) -> Any: ...

    def register_agent(self, run_id: str, name: str, token: Any) -> tuple[AgentLike, str]: ...

    def authenticate(self, credential: str) -> AgentLike | None: ...

    def revoked_agent_ids(self, run_id: str) -> set[str]: ...

    def ping(self) -> None: ...

    def list_agents(self, run_id: str) -> Sequence[AgentLike]: ...

    def list_rounds(self, run_id: str) -> Sequence[RoundLike]: ...

    def list_global_models(self, run_id: str) -> Sequence[ModelLike]: ...

    def load_global_model(self, run_id: str, round: int) -> Weights: ...

    def list_local_models(self, run_id: str, round: int | None = None) -> Sequence[ModelLike]: ...

    def load_local_model(self, run_id: str, round: int, client_id: str) -> Weights: ...

    def metrics(self, run_id: str, scope: str | None = None) -> Sequence[MetricLike]: ...
