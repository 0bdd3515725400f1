"""Checking one field of a secure-aggregation message that came from another party.

Every protocol message may have crossed a network from a party that lies, so each field
is checked for type, size and range before anything uses it, and a refusal names the
field (``SecAggMessageError.field``) so a deployed server can answer which one was wrong.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from fedloom.core.errors import ValidationError

MAX_ID_CHARS = 128
MAX_PEERS = 10_000


class SecAggMessageError(ValidationError):
    """A secure-aggregation message was refused; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def require_object(obj: Any, field: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """``obj`` as a JSON object with exactly ``keys``."""
    if not isinstance(obj, Mapping):
        raise SecAggMessageError(field, f"must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    extra = sorted(str(k) for k in obj if k not in keys)
    if missing or extra:
        raise SecAggMessageError(field, f"must have exactly the keys {list(keys)} (missing {missing}, unknown {extra})")
    return obj


def round_number(value: Any, field: str = "round") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**62:
        raise SecAggMessageError(field, f"must be an integer round number >= 1, got {value!r}")
    return value


def client_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or "\x00" in value:
        raise SecAggMessageError(field, f"must be a non-empty client id of at most {MAX_ID_CHARS} characters")
    return value


def id_list(value: Any, field: str) -> tuple[str, ...]:
    """A list of distinct client ids."""
    if not isinstance(value, list) or len(value) > MAX_PEERS:
        raise SecAggMessageError(field, f"must be a list of at most {MAX_PEERS} client ids")
    ids = tuple(client_id(v, f"{field}[{i}]") for i, v in enumerate(value))
    if len(set(ids)) != len(ids):
        raise SecAggMessageError(field, "names a client twice")
    return ids


def blob(value: Any, field: str, size: int | None = None, max_size: int | None = None) -> bytes:
    """Base64 text decoded to bytes, of exactly ``size`` (or at most ``max_size``) bytes."""
    limit = size if size is not None else max_size
    if not isinstance(value, str) or (limit is not None and len(value) > 4 * (limit // 3 + 1)):
        raise SecAggMessageError(field, "must be base64 text of the expected length")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SecAggMessageError(field, "is not valid base64") from None
    if size is not None and len(raw) != size:
        raise SecAggMessageError(field, f"must decode to {size} bytes, got {len(raw)}")
    return raw


def blob_map(value: Any, field: str, size: int) -> dict[str, bytes]:
    """A JSON object of client id -> base64 blob of ``size`` bytes."""
    if not isinstance(value, Mapping) or len(value) > MAX_PEERS:
        raise SecAggMessageError(field, f"must be an object of at most {MAX_PEERS} client id -> base64 entries")
    return {client_id(k, f"{field} key"): blob(v, f"{field}[{k!r}]", size) for k, v in value.items()}


def encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
