"""The checks the store makes itself, so SQLite and PostgreSQL refuse the same inputs the same way.

PostgreSQL enforces column lengths, 32/64-bit integer ranges and refuses NUL characters;
SQLite does none of that. Every part of :class:`fedloom.store.SqlStore` validates its
inputs with these functions first, so a bad value is a ``StoreError`` naming the field
on every backend, and nothing is written.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any

from fedloom.core.errors import StoreError
from fedloom.store.types import dump_json

#: limits of the columns: names are VARCHAR(200), codes VARCHAR(100), rounds 32-bit, counts 64-bit
MAX_NAME_LENGTH = 200
MAX_CODE_LENGTH = 100
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def check_choice(field: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise StoreError(f"{field} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_int(field: str, value: int, minimum: int | None = 0, maximum: int = INT64_MAX) -> int:
    """Accept ints and NumPy integers (via ``__index__``); refuse bools, floats and strings.

    The range is the column's (64-bit by default, ``INT32_MAX`` for rounds and counts):
    PostgreSQL refuses a larger value and SQLite overflows, so both get the same error.
    """
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool):
        raise StoreError(f"{field} must be an integer, got {value!r}")
    low = -INT64_MAX - 1 if minimum is None else minimum
    if number < low:
        raise StoreError(f"{field} must be >= {low}, got {number}")
    if number > maximum:
        raise StoreError(f"{field} must be <= {maximum}, got {number}")
    return number


def check_text(field: str, value: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Text for a length-limited column: PostgreSQL enforces the limit and refuses NUL, SQLite neither."""
    if len(value) > max_length:
        raise StoreError(f"{field} must be at most {max_length} characters, got {len(value)}: {value[:40]!r}...")
    if "\x00" in value:
        raise StoreError(f"{field} must not contain NUL characters, got {value!r}")
    return value


def check_name(field: str, value: str, max_length: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{field} must be a non-empty string, got {value!r}")
    return check_text(field, value, max_length)


def printable(value: str, max_length: int | None = None) -> str:
    """Untrusted text kept as a record: NUL made visible, cut to ``max_length`` (marked with ``...``)."""
    value = value.replace("\x00", "\\x00")
    if max_length is not None and len(value) > max_length:
        value = value[: max_length - 3] + "..."
    return value


def plain_json(value: Any) -> Any:
    """Round-trip through JSON so NumPy scalars, paths and tuples become plain JSON values."""
    return json.loads(dump_json(value))
