"""What a store's readers return: frozen snapshots, detached from any database session.

Readers hand out plain dataclasses rather than ORM objects so callers (CLI, dashboard,
the resuming aggregator) cannot trigger lazy loads or accidental writes, and so the
records stay valid after the store is closed. They are pure data and live in core so
the store protocols (:mod:`fedloom.core.store_protocols`) can name them, and the server
and the simulation can read them without importing the store that makes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: values of ``RunRecord.kind``
RUN_KINDS = ("simulation", "deployment")
#: values of ``RunRecord.status``; every status but ``running`` is terminal
RUN_STATUSES = ("running", "finished", "failed", "interrupted")
#: values of ``RoundRecord.status``
ROUND_STATUSES = ("open", "closed", "abandoned")
#: values of ``MetricRecord.scope``
METRIC_SCOPES = ("server", "client", "system")
#: values of ``TokenRecord.role`` and ``AgentRecord.role``; ``admin`` may upload the initial model
ROLES = ("agent", "admin")


@dataclass(frozen=True)
class RunRecord:
    """One simulation or deployment: its configuration, seed, outcome and timing."""

    id: str
    name: str
    kind: str
    status: str
    seed: int
    config: Mapping[str, Any]
    created_at: datetime
    finished_at: datetime | None = None
    summary: Mapping[str, Any] | None = None

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id, enough to name a run on the command line."""
        return self.id[:8]


@dataclass(frozen=True)
class ClientRecord:
    """A client (simulated) or agent (deployed) registered in a run."""

    run_id: str
    client_id: str
    num_samples: int | None
    created_at: datetime
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RoundRecord:
    """One round: who was selected, when it opened and closed, what it aggregated."""

    run_id: str
    round: int
    status: str
    selected: tuple[str, ...]
    opened_at: datetime
    closed_at: datetime | None = None
    num_updates: int = 0
    num_samples: int = 0


@dataclass(frozen=True)
class ModelRecord:
    """A stored model; ``client_id`` is None for a global model and set for a local one.

    ``sha256`` is the content hash of the tensors (:func:`fedloom.core.content_hash`);
    ``blob_key`` names the serialised bytes in the blob store, or is None when they
    were not kept.
    """

    id: int
    run_id: str
    round: int
    num_samples: int
    sha256: str
    blob_key: str | None
    created_at: datetime
    client_id: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_global(self) -> bool:
        """True for a global (aggregated) model."""
        return self.client_id is None


@dataclass(frozen=True)
class MetricRecord:
    """One named value, measured by the server or reported by a client, in one round."""

    run_id: str
    round: int
    scope: str
    name: str
    value: float
    created_at: datetime
    client_id: str | None = None


@dataclass(frozen=True)
class RejectionRecord:
    """An update or request the server refused, with a machine code and a human reason."""

    id: int
    run_id: str
    round: int | None
    client_id: str | None
    code: str
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    """A join token, without its secret: the store keeps only the token's SHA-256."""

    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None
    #: distinct agent names that may register with the token (``fedloom token create --max-agents``)
    max_agents: int = 1
    #: distinct agent names registered with it so far (filled by ``list_tokens``)
    used: int = 0

    @property
    def active(self) -> bool:
        """True until the token is revoked."""
        return self.revoked_at is None


@dataclass(frozen=True)
class AgentRecord:
    """A deployed agent registered in one run, without its credential (kept hashed)."""

    id: str
    run_id: str
    name: str
    role: str
    token_id: int
    created_at: datetime
    last_seen_at: datetime | None = None
