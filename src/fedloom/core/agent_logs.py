"""Agents' log records shipped to the aggregator: their shape, limits and checks.

A site's log lines are the first thing an operator needs when an agent misbehaves, and
the aggregator is the one place every agent reaches. They arrive from remote code, so
a batch is bounded (records, characters, bytes), every field is checked and named in a
refusal, and the agent's own clock is only believed within a window around the
aggregator's. Both sides scrub secrets (:func:`fedloom.core.redaction.redact_secrets`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from fedloom.core.errors import ValidationError
from fedloom.core.redaction import redact_secrets

#: levels a record may carry (Python's names)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: most records in one ``POST /v1/logs`` batch
MAX_LOG_RECORDS = 200
#: longest message kept; longer ones are refused (the agent cuts its own before sending)
MAX_LOG_MESSAGE = 2000
#: longest logger name
MAX_LOGGER_NAME = 200
#: largest request body of a batch
MAX_LOG_BODY = 64 * 1024
#: rows one agent may store per run; past it one ``dropped`` marker row is written, then nothing
MAX_STORED_LOGS = 50_000
#: how far an agent's clock may be behind (a record buffered while the server was down) or ahead
CLOCK_PAST = timedelta(days=7)
CLOCK_FUTURE = timedelta(hours=1)


@dataclass(frozen=True)
class AgentLogEntry:
    """One checked record of a batch, before it is stored."""

    created_at: datetime
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class AgentLogRecord:
    """A stored record: ``created_at`` is the agent's clock, ``received_at`` the aggregator's."""

    id: int
    run_id: str
    agent: str
    created_at: datetime
    received_at: datetime
    level: str
    logger: str
    message: str


class AgentLogStore(Protocol):
    """Where agents' logs are kept (the ``agent_logs`` table of :class:`fedloom.store.SqlStore`)."""

    def append_agent_logs(
        self, run_id: str, agent: str, entries: Sequence[AgentLogEntry], cap: int = MAX_STORED_LOGS
    ) -> int:
        """Store ``entries`` (up to ``cap`` rows per agent and run); returns how many were stored."""
        ...

    def agent_logs(
        self, run_id: str, agent: str | None = None, after_id: int = 0, limit: int = 1000, min_level: str | None = None
    ) -> Sequence[AgentLogRecord]:
        """Records in id order, of one agent if given, with ids above ``after_id``."""
        ...


def parse_log_batch(data: object, now: datetime) -> list[AgentLogEntry]:
    """The checked (and scrubbed) entries of a batch ``{"records": [...]}``, or :class:`ValidationError`."""
    if not isinstance(data, Mapping) or set(data) != {"records"} or not isinstance(data["records"], list):
        raise ValidationError('a log batch must be a JSON object {"records": [...]}')
    records = data["records"]
    if len(records) > MAX_LOG_RECORDS:
        raise ValidationError(f"a log batch holds {len(records)} records; send at most {MAX_LOG_RECORDS} per request")
    return [_entry(i, record, now) for i, record in enumerate(records)]


def _entry(index: int, record: object, now: datetime) -> AgentLogEntry:
    where = f"records[{index}]"
    if not isinstance(record, Mapping) or set(record) != {"created_at", "level", "logger", "message"}:
        raise ValidationError(f"{where} must be an object with exactly created_at, level, logger, message")
    level, logger, message = record["level"], record["logger"], record["message"]
    if level not in LOG_LEVELS:
        raise ValidationError(f"{where}.level must be one of {', '.join(LOG_LEVELS)}")
    if not isinstance(logger, str) or not 0 < len(logger) <= MAX_LOGGER_NAME:
        raise ValidationError(f"{where}.logger must be a string of 1-{MAX_LOGGER_NAME} characters")
    if not isinstance(message, str) or len(message) > MAX_LOG_MESSAGE:
        raise ValidationError(f"{where}.message must be a string of at most {MAX_LOG_MESSAGE} characters")
    return AgentLogEntry(_agent_time(where, record["created_at"], now), level, printable(logger), clean(message))


def _agent_time(where: str, value: object, now: datetime) -> datetime:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{where}.created_at must be Unix seconds (a finite number)")
    earliest, latest = now - CLOCK_PAST, now + CLOCK_FUTURE
    if not earliest.timestamp() <= value <= latest.timestamp():
        detail = f"{where}.created_at = {value!r} is not between {earliest.isoformat()} and {latest.isoformat()}"
        raise ValidationError(f"{detail}: check the agent's clock")
    return datetime.fromtimestamp(value, UTC)


def printable(text: str) -> str:
    """``text`` with control characters (but newlines and tabs) escaped, so a stored line prints safely."""
    return "".join(c if c.isprintable() or c in "\n\t" else ascii(c)[1:-1] for c in text)


def clean(message: str) -> str:
    """A message as stored and printed: secrets masked, control characters escaped."""
    return printable(redact_secrets(message))
