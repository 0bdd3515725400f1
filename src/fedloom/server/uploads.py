"""Reading an uploaded update: bytes in, a checked :class:`ParsedUpload` or an :class:`UploadRefusedError` out.

Everything an agent sends is parsed and range-checked here, before the aggregator's
lock is taken and before anything reaches the round engine or the database, so a
hostile or broken upload is refused with a code and a reason naming the field
instead of failing later in a store write (where it would look like an outage).
Kept apart from :mod:`fedloom.server.aggregator` so the round logic and the
parsing of untrusted bytes can change independently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedloom.core.compression import CompressionSpec, decode_update
from fedloom.core.compression_wire import HEADER_FIELD, from_wire
from fedloom.core.errors import PayloadTooLargeError, SerializationError, ValidationError
from fedloom.core.metrics import metrics_from_json
from fedloom.core.serialization import MAX_NUM_SAMPLES, MAX_ROUND, from_bytes
from fedloom.core.system_metrics import system_metrics_from_json
from fedloom.core.weights import Weights


class UploadRefusedError(Exception):
    """An upload that cannot be accepted: ``code`` (protocol), ``detail`` (words), ``round`` if known."""

    def __init__(self, code: str, detail: str, round: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.round = round


@dataclass(frozen=True)
class ParsedUpload:
    """An update's parts after every check that needs no round state."""

    weights: Weights
    round: int
    num_samples: int
    metrics: dict[str, float]
    client_id: str
    sha256: str  # verified by from_bytes: nothing hashes the model again
    payload: bytes  # the bytes as received, stored as they are
    system: dict[str, float]  # the agent's own resource use (scope "system"), {} when not reported
    header_extra: Mapping[str, str] | None = None  # the header's non-reserved fields (compression reads them)


def parse_metrics(extra: Mapping[str, str] | None) -> dict[str, float]:
    """The ``metrics`` header field (a JSON object, see :func:`fedloom.core.metrics.validate_metrics`), or {}."""
    text = (extra or {}).get("metrics")
    if text is None:
        return {}
    try:
        return metrics_from_json(text)
    except ValidationError as exc:
        raise SerializationError(f"header field 'metrics' is invalid: {exc}") from None


def parse_system(extra: Mapping[str, str] | None) -> dict[str, float]:
    """The optional ``system`` header field (:mod:`fedloom.core.system_metrics`), or {}."""
    text = (extra or {}).get("system")
    if text is None:
        return {}
    try:
        return system_metrics_from_json(text)
    except ValidationError as exc:
        raise SerializationError(f"header field 'system' is invalid: {exc}") from None


def parse_update(body: bytes, max_bytes: int) -> ParsedUpload:
    """The checked parts of an update upload, or :class:`UploadRefusedError`."""
    try:
        weights, header = from_bytes(body, max_bytes=max_bytes)
    except PayloadTooLargeError as exc:
        raise UploadRefusedError("payload_too_large", str(exc)) from None
    except SerializationError as exc:
        raise UploadRefusedError("invalid_payload", str(exc)) from None
    if header.round < 0:
        raise UploadRefusedError("invalid_payload", f"header field 'round' must be in [0, {MAX_ROUND}], got -1")
    if header.num_samples < 1:
        detail = f"header field 'num_samples' must be in [1, {MAX_NUM_SAMPLES}], got {header.num_samples}"
        raise UploadRefusedError("invalid_payload", detail, header.round)
    try:
        metrics = parse_metrics(header.extra)
        system = parse_system(header.extra)
    except SerializationError as exc:
        raise UploadRefusedError("invalid_payload", str(exc), header.round) from None
    parts = (header.round, header.num_samples, metrics, header.client_id, header.sha256, body, system)
    return ParsedUpload(weights, *parts, header.extra)


def decode_compressed(parsed: ParsedUpload, start: Weights, spec: CompressionSpec) -> Weights:
    """The local model a compressed upload encodes against ``start`` (the round's global model).

    Not wired into the aggregator yet (it needs the round's global model, which only the
    engine holds): the next step calls it after :func:`parse_update` in runs that set a
    compression scheme. Every malformed compressed payload is ``invalid_payload``.
    """
    try:
        update = from_wire(parsed.weights, parsed.header_extra)
        if update.scheme != spec.scheme:
            raise SerializationError(
                f"header field {HEADER_FIELD!r} has scheme {update.scheme!r}, but this run uses {spec.scheme!r}"
            )
        return decode_update(update, start)
    except SerializationError as exc:
        raise UploadRefusedError("invalid_payload", str(exc), parsed.round) from None
