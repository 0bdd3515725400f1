"""Column types every fedloom table uses, portable across SQLite and PostgreSQL.

SQLite keeps neither time zones nor NaN nor JSON, so these decorators make the same
values come back from every backend: UTC-aware datetimes, NaN floats, and JSON
documents kept as canonical text.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import DateTime, Dialect, Float, Text
from sqlalchemy.types import TypeDecorator

from fedloom.core.errors import StoreError


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime (the only kind the store keeps)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps no zone, so values are normalised to UTC on the way in and marked
    UTC on the way out; naive datetimes are refused because their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StoreError(f"refusing naive datetime {value!r}: the store keeps timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    """Convert the few non-JSON types configs commonly hold (NumPy scalars/arrays, paths)."""
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: Any) -> str:
    """Canonical JSON text (sorted keys) so equal configs are stored identically."""
    try:
        return json.dumps(value, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value cannot be stored as JSON: {exc}") from None


class JsonText(TypeDecorator[Any]):
    """A JSON document kept as text: portable to any SQL backend and readable with sqlite3."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any | None, dialect: Dialect) -> str | None:
        return None if value is None else dump_json(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Any | None:
        return None if value is None else json.loads(value)


class NanFloat(TypeDecorator[float]):
    """A float whose NaN survives the round trip (SQLite stores NaN as NULL)."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> float | None:
        return math.nan if value is None else float(value)
