"""Agents' log records (the ``AgentLogsMixin`` part of :class:`fedloom.store.SqlStore`).

Appending is bounded per agent and run: past ``cap`` rows nothing more is kept but one
marker row counting what was dropped, so a chatty or hostile agent cannot fill the
database. Reads page by id (``after_id``), which is what ``fedloom logs --follow`` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, delete, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fedloom.core.agent_logs import LOG_LEVELS, MAX_STORED_LOGS, AgentLogEntry, AgentLogRecord
from fedloom.core.errors import StoreError
from fedloom.store.checks import check_choice, check_int, check_name, check_text
from fedloom.store.connection import SqlCore
from fedloom.store.schema import Base
from fedloom.store.types import UtcDateTime, utcnow

#: logger name of the marker row that counts the records dropped past the cap
DROPPED_LOGGER = "fedloom.aggregator.log_cap"


class AgentLogRow(Base):
    """One log record of one agent, with the agent's clock and the aggregator's."""

    __tablename__ = "agent_logs"
    __table_args__ = (Index("ix_agent_logs_run_agent", "run_id", "agent", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    level: Mapped[str] = mapped_column(String(10))
    logger: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)


class AgentLogsMixin(SqlCore):
    """Append and read agents' log records."""

    def append_agent_logs(
        self, run_id: str, agent: str, entries: Sequence[AgentLogEntry], cap: int = MAX_STORED_LOGS
    ) -> int:
        """Store ``entries`` while the agent has fewer than ``cap`` rows in the run; the rest only
        count in one marker row ("dropped N records ..."). Returns how many were stored."""
        agent = check_name("agent", agent, 64)
        now = utcnow()
        rows = [_row(run_id, agent, entry, now) for entry in entries]
        if not rows:
            return 0
        with self._session(f"store logs of agent {agent!r} in run {run_id}", run_id=run_id) as session:
            # written first, then counted: the write lock comes first (SQLite cannot turn a read
            # transaction into a write one while another writer commits), and the count is exact
            session.execute(insert(AgentLogRow), rows)
            mine = (AgentLogRow.run_id == run_id, AgentLogRow.agent == agent, AgentLogRow.logger != DROPPED_LOGGER)
            held = session.scalar(select(func.count()).select_from(AgentLogRow).where(*mine)) or 0
            dropped = min(len(rows), max(0, held - cap))
            if dropped:
                newest = select(AgentLogRow.id).where(*mine).order_by(AgentLogRow.id.desc()).limit(dropped)
                session.execute(delete(AgentLogRow).where(AgentLogRow.id.in_(newest.scalar_subquery())))
                _count_dropped(session, run_id, agent, dropped, cap, now)
            return len(rows) - dropped

    def agent_logs(
        self, run_id: str, agent: str | None = None, after_id: int = 0, limit: int = 1000, min_level: str | None = None
    ) -> list[AgentLogRecord]:
        """Up to ``limit`` records with ids above ``after_id``, oldest first; of one agent, at or
        above one level, when given."""
        stmt = select(AgentLogRow).where(AgentLogRow.run_id == run_id, AgentLogRow.id > check_int("after_id", after_id))
        if agent is not None:
            stmt = stmt.where(AgentLogRow.agent == agent)
        if min_level is not None:
            level = check_choice("level", min_level.upper(), LOG_LEVELS)
            stmt = stmt.where(AgentLogRow.level.in_(LOG_LEVELS[LOG_LEVELS.index(level) :]))
        stmt = stmt.order_by(AgentLogRow.id).limit(check_int("limit", limit, minimum=1))
        with self._session(f"read agent logs of run {run_id}") as session:
            return [_record(row) for row in session.scalars(stmt)]


def _count_dropped(session: Session, run_id: str, agent: str, dropped: int, cap: int, now: datetime) -> None:
    """Add ``dropped`` to the agent's one marker row (made on the first drop)."""
    where = (AgentLogRow.run_id == run_id, AgentLogRow.agent == agent, AgentLogRow.logger == DROPPED_LOGGER)
    marker = session.scalars(select(AgentLogRow).where(*where)).first()
    total = dropped + (int(marker.message.split()[1]) if marker is not None else 0)
    text = f"dropped {total} records: agent {agent!r} reached the limit of {cap} stored log rows"
    if marker is None:
        session.add(AgentLogRow(**_marker(run_id, agent, now), message=text))
    else:
        marker.message, marker.received_at = text, now


def _row(run_id: str, agent: str, entry: AgentLogEntry, now: datetime) -> dict[str, object]:
    if entry.level not in LOG_LEVELS:
        raise StoreError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {entry.level!r}")
    return {
        "run_id": run_id,
        "agent": agent,
        "created_at": entry.created_at,
        "received_at": now,
        "level": entry.level,
        "logger": check_name("logger", entry.logger),
        "message": check_text("message", entry.message, 100_000),
    }


def _marker(run_id: str, agent: str, now: datetime) -> dict[str, object]:
    times = {"created_at": now, "received_at": now}
    return {"run_id": run_id, "agent": agent, **times, "level": "WARNING", "logger": DROPPED_LOGGER}


def _record(row: AgentLogRow) -> AgentLogRecord:
    return AgentLogRecord(
        row.id, row.run_id, row.agent, row.created_at, row.received_at, row.level, row.logger, row.message
    )
