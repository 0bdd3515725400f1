"""The global model an aggregator serves, and the initial model it may start from.

The newest global model is kept in memory, read-only, with its payload built once and
shared by every download; older models are read from the store on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedloom.core.errors import ConfigError, IntegrityError, SerializationError, ValidationError
from fedloom.core.serialization import from_bytes, from_plain_bytes, to_bytes
from fedloom.core.weights import Weights, validate_weights


@dataclass(frozen=True)
class ServedModel:
    """A global model held in memory: the newest one, which most downloads ask for."""

    weights: Weights
    sha256: str
    round: int
    num_samples: int

    def payload(self) -> bytes:
        return to_bytes(self.weights, round=self.round, num_samples=self.num_samples)


def read_only(weights: Weights) -> Weights:
    """The same arrays, made read-only: a served model must never change under a download."""
    for array in weights.values():
        array.flags.writeable = False
    return weights


def iso(timestamp: float) -> str:
    """A deadline as agents see it (UTC, seconds)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_initial_model(path: str | Path) -> Weights:
    """The weights in ``path``: a fedloom payload (``to_bytes``) or a raw safetensors file."""
    file = Path(path)
    where = f"[run] initial_model {str(file)!r}"
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc} (set initial_model to a safetensors file)") from None
    try:
        weights, _ = from_bytes(data)
    except IntegrityError as exc:
        raise ConfigError(f"{where} is corrupt: {exc}") from None
    except SerializationError:
        try:
            weights = from_plain_bytes(data)
        except SerializationError as exc:
            raise ConfigError(f"{where} is not a safetensors file fedloom can load: {exc}") from None
    try:
        validate_weights(weights)
    except ValidationError as exc:
        raise ConfigError(f"{where} holds an unusable model: {exc}") from None
    return weights
