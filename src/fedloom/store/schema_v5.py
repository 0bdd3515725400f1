"""Schema version 5: the ``agent_logs`` table (agents' log records shipped to the aggregator).

Kept apart from :mod:`fedloom.store.schema` (which imports :func:`to_v5`) so that file
stays one screenful per concept; the frozen table here is what version 5 creates,
whatever :class:`fedloom.store.agent_logs.AgentLogRow` becomes later.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, ForeignKey, Index, Integer, MetaData, String, Table, Text

from fedloom.store.types import UtcDateTime


def agent_logs_v5(metadata: MetaData) -> Table:
    """``agent_logs`` exactly as schema version 5 defines it."""
    return Table(
        "agent_logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("agent", String(64), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("received_at", UtcDateTime, nullable=False),
        Column("level", String(10), nullable=False),
        Column("logger", String(200), nullable=False),
        Column("message", Text, nullable=False),
        Index("ix_agent_logs_run_agent", "run_id", "agent", "id"),
    )


def to_v5(conn: Connection) -> None:
    """Version 5: ``agent_logs`` (a new table only; older runs have no agent logs)."""
    metadata = MetaData()
    Table("runs", metadata, Column("id", String(32), primary_key=True))  # only to resolve the foreign key
    agent_logs_v5(metadata).create(conn)
