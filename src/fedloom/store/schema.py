"""The database schema of a fedloom store, and how an existing database is upgraded.

The same tables serve simulation (written once, read by the CLI and dashboard) and
deployment, where an aggregator killed at any moment must resume from the database
alone: the open round and its selected clients, the local models already received
(with their blobs), the latest global model, and the rejections so far.

Versioning: a fresh database is created from the current models and stamped with
:data:`SCHEMA_VERSION`. An older database is upgraded by applying, in order, each step
of :data:`MIGRATIONS` above its version; steps only add (tables, columns, indexes) or
rewrite in place, never drop data. A database newer than this code is refused rather
than guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateColumn

from fedloom.core.errors import StoreError
from fedloom.core.redaction import redact_url
from fedloom.store.schema_v5 import to_v5
from fedloom.store.schema_v6 import to_v6
from fedloom.store.schema_v7 import to_v7
from fedloom.store.types import JsonText, NanFloat, UtcDateTime, dump_json

#: the schema version this code writes and reads (2 added ``tokens`` and ``agents``,
#: 3 added ``tokens.max_agents``, 4 added ``server_states``, 5 added ``agent_logs``,
#: 6 added the lineage columns of ``global_models``, 7 added ``cluster_models``)
SCHEMA_VERSION = 7
#: agents a join token admits when its creator names no limit: one site, one agent
DEFAULT_MAX_AGENTS = 1

Migration = Callable[[Connection], None]


class Base(DeclarativeBase):
    """Declarative base of every fedloom table."""


_RUN_FK = "runs.id"


class SchemaVersionRow(Base):
    """A single row (id 1) holding the schema version of this database."""

    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class RunRow(Base):
    """A simulation or deployment run."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    seed: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    summary: Mapped[Any | None] = mapped_column(JsonText, nullable=True)


class ClientRow(Base):
    """A client (simulated) or agent (deployed) known to a run."""

    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("run_id", "client_id", name="uq_clients_run_client"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(200))
    num_samples: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    extra: Mapped[Any | None] = mapped_column(JsonText, nullable=True)


class RoundRow(Base):
    """One round of a run; an ``open`` row after a crash is the round to resume."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_rounds_run_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    selected: Mapped[Any] = mapped_column(JsonText)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    num_updates: Mapped[int] = mapped_column(Integer, default=0)
    num_samples: Mapped[int] = mapped_column(BigInteger, default=0)


class GlobalModelRow(Base):
    """The one global model produced by a round (round 0 is usually the initial model)."""

    __tablename__ = "global_models"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_global_models_run_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    num_samples: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: the lineage link and the run config's hash (v6; NULL on rows recorded before it), last so the
    #: columns a migration adds sit where a fresh ``CREATE TABLE`` puts them
    lineage_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LocalModelRow(Base):
    """One client's accepted update in one round; the blob may be skipped in simulation."""

    __tablename__ = "local_models"
    __table_args__ = (UniqueConstraint("run_id", "round", "client_id", name="uq_local_models_run_round_client"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(String(200))
    num_samples: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metrics: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ServerStateRow(Base):
    """The server optimiser's state after a round (moments, momentum, step), kept with its global model
    so a restarted aggregator or a resumed simulation continues it without replaying every round."""

    __tablename__ = "server_states"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_server_states_run_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MetricRow(Base):
    """One named value per row, so a series is one indexed query and any name can be added."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_scope_name", "run_id", "scope", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(20))
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(NanFloat, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RejectionRow(Base):
    """A refused update or request; failures are data, kept and shown, never dropped."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"), index=True)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    code: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TokenRow(Base):
    """A join token: global to the database, stored as the SHA-256 of its text only.

    Names are unique among *active* tokens (a partial unique index), so a revoked
    token's name can be issued again while the revoked row stays as history.
    """

    __tablename__ = "tokens"
    __table_args__ = (
        Index(
            "uq_tokens_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: distinct agent names that may register with this token (a Sybil bound); last, so the
    #: column a migration adds sits where a fresh ``CREATE TABLE`` puts it
    max_agents: Mapped[int] = mapped_column(Integer, server_default=text(str(DEFAULT_MAX_AGENTS)))


class AgentRow(Base):
    """A deployed agent of one run, holding the SHA-256 of its current credential."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_agents_run_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey(_RUN_FK, ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    credential_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


# --------------------------------------------------------------------- migrations
#
# Each step owns frozen copies of the tables it creates, so a later change to the
# models above cannot change what an old step does; a test checks that a migrated
# database ends up identical to a freshly created one.


def _v2_tables() -> tuple[Table, Table]:
    """``tokens`` and ``agents`` exactly as schema version 2 defines them."""
    metadata = MetaData()
    Table("runs", metadata, Column("id", String(32), primary_key=True))  # only to resolve the foreign key
    tokens = Table(
        "tokens",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(64), nullable=False),
        Column("sha256", String(64), nullable=False, unique=True),
        Column("role", String(20), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("revoked_at", UtcDateTime, nullable=True),
        Index(
            "uq_tokens_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )
    agents = Table(
        "agents",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(64), nullable=False),
        Column("token_id", Integer, ForeignKey("tokens.id"), nullable=False, index=True),
        Column("role", String(20), nullable=False),
        Column("credential_sha256", String(64), nullable=False, unique=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("last_seen_at", UtcDateTime, nullable=True),
        UniqueConstraint("run_id", "name", name="uq_agents_run_name"),
    )
    return tokens, agents


def _to_v2(conn: Connection) -> None:
    """Version 2: join tokens and per-run agents for deployments (new tables only)."""
    for table in _v2_tables():
        table.create(conn)


def _to_v3(conn: Connection) -> None:
    """Version 3: ``tokens.max_agents`` (tokens issued before it admit the default one agent name),
    and no database password left in a stored run config.

    The column is rendered by SQLAlchemy's own DDL compiler, so the altered table is
    exactly what a fresh ``CREATE TABLE`` makes (SQLite keeps the DDL text verbatim).
    """
    column = Column("max_agents", Integer, nullable=False, server_default=text(str(DEFAULT_MAX_AGENTS)))
    Table("tokens", MetaData(), column)
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE tokens ADD COLUMN {ddl}"))
    _redact_stored_db_urls(conn)


def _redact_stored_db_urls(conn: Connection) -> None:
    """Runs recorded before version 3 kept ``[server] db_url`` with its password: mask it."""
    for run_id, stored in conn.execute(text("SELECT id, config FROM runs")).all():
        config = json.loads(stored) if stored else None
        server = config.get("server") if isinstance(config, dict) else None
        if not isinstance(server, dict):
            continue
        url = server.get("db_url")
        if isinstance(url, str) and redact_url(url) != url:
            server["db_url"] = redact_url(url)
            conn.execute(
                text("UPDATE runs SET config = :config WHERE id = :id"), {"config": dump_json(config), "id": run_id}
            )


def _to_v4(conn: Connection) -> None:
    """Version 4: ``server_states``, the server optimiser's state stored with each global model (a new
    table only; runs recorded before it have none, and a resuming aggregator replays their rounds)."""
    metadata = MetaData()
    Table("runs", metadata, Column("id", String(32), primary_key=True))  # only to resolve the foreign key
    states = Table(
        "server_states",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("round", Integer, nullable=False),
        Column("step", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("blob_key", String(64), nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        UniqueConstraint("run_id", "round", name="uq_server_states_run_round"),
    )
    states.create(conn)


#: upgrade steps keyed by the version they upgrade *to*
MIGRATIONS: dict[int, Migration] = {2: _to_v2, 3: _to_v3, 4: _to_v4, 5: to_v5, 6: to_v6, 7: to_v7}


def current_version(conn: Connection) -> int | None:
    """The version stamped in the database, or None when it holds no fedloom schema yet."""
    if not inspect(conn).has_table(SchemaVersionRow.__tablename__):
        return None
    version = conn.execute(select(SchemaVersionRow.version).where(SchemaVersionRow.id == 1)).scalar_one_or_none()
    if version is None:
        raise StoreError("the schema_version table is empty: this database was not created by fedloom")
    return int(version)


def upgrade(conn: Connection) -> int:
    """Create or upgrade the schema inside the caller's transaction; returns the final version."""
    version = current_version(conn)
    if version is None:
        _create_fresh(conn)
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"this database has schema version {version}, but this fedloom only knows up to {SCHEMA_VERSION}: "
            "upgrade fedloom to open it"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        _apply(conn, target)
    return SCHEMA_VERSION


def _create_fresh(conn: Connection) -> None:
    """Create every table at the current version; refuse to adopt unrelated existing tables."""
    existing = set(inspect(conn).get_table_names()) & set(Base.metadata.tables)
    if existing:
        raise StoreError(f"the database has fedloom tables {sorted(existing)} but no schema_version row")
    Base.metadata.create_all(conn)
    conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))


def _apply(conn: Connection, target: int) -> None:
    """Run the step that upgrades to ``target`` and stamp the new version."""
    step = MIGRATIONS.get(target)
    if step is None:
        raise StoreError(f"no migration step to schema version {target}; this fedloom build is incomplete")
    step(conn)
    conn.execute(update(SchemaVersionRow).where(SchemaVersionRow.id == 1).values(version=target))
