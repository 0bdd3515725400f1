"""Reading an uploaded update: bytes in, a checked :class:`ParsedUpload` or an :class:`UploadRefusedError` out.

Everything an agent sends is parsed and range-checked here, before the aggregator's
lock is taken and before anything reaches the round engine or the database, so a
hostile or broken upload is refused with a code and a reason naming the field
instead of failing later in a store write (where it would look like an outage).
Kept apart from :mod:`fedloom.server.aggregator` so the round logic and the
parsing of untrusted bytes can change independently.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedloom.core.compression import CompressionSpec, decode_update
from fedloom.core.compression_wire import HEADER_FIELD, TENSOR_BYTES_METRIC, WIRE_BYTES_METRIC, from_wire
from fedloom.core.errors import PayloadTooLargeError, SerializationError, ValidationError
from fedloom.core.metrics import metrics_from_json
from fedloom.core.serialization import MAX_NUM_SAMPLES, MAX_ROUND, content_hash, from_bytes, to_bytes
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
    """The local model a compressed upload encodes against ``start`` (the round's global model);
    every malformed compressed payload is ``invalid_payload``."""
    try:
        update = from_wire(parsed.weights, parsed.header_extra)
        if update.scheme != spec.scheme:
            raise SerializationError(
                f"header field {HEADER_FIELD!r} has scheme {update.scheme!r}, but this run uses {spec.scheme!r}"
            )
        return decode_update(update, start)
    except SerializationError as exc:
        raise UploadRefusedError("invalid_payload", str(exc), parsed.round) from None


def as_local_model(parsed: ParsedUpload, start: Weights | None, spec: CompressionSpec | None) -> ParsedUpload:
    """The upload as the local model it stands for, which is what the round and the store get.

    Plain uploads pass unchanged (one with a ``compression`` field in a run without
    compression is refused). A compressed one is decoded against ``start`` (the open round's
    global model; None when the upload is for another round, which the engine refuses by its
    round) and re-serialised, so the store keeps every local model in the plain form and its
    hash is the decoded model's (the hash the agent lists in the lineage). Its wire size and
    the model's tensor size are added to its metrics, as the simulation reports them.
    """
    compressed = HEADER_FIELD in (parsed.header_extra or {})
    if spec is None or start is None:
        if compressed and spec is None:
            detail = f"header field {HEADER_FIELD!r} is set, but this run does not use compression"
            raise UploadRefusedError("invalid_payload", detail, parsed.round)
        return parsed
    weights = decode_compressed(parsed, start, spec)
    sizes = {WIRE_BYTES_METRIC: float(len(parsed.payload)), TENSOR_BYTES_METRIC: float(_tensor_bytes(weights))}
    metrics = {**parsed.metrics, **sizes}
    extra = {k: v for k, v in (parsed.header_extra or {}).items() if k != HEADER_FIELD}
    extra["metrics"] = json.dumps(metrics, allow_nan=False)
    body = to_bytes(
        weights, round=parsed.round, client_id=parsed.client_id, num_samples=parsed.num_samples, extra=extra
    )
    return dataclasses.replace(
        parsed, weights=weights, metrics=metrics, sha256=content_hash(weights), payload=body, header_extra=extra
    )


def _tensor_bytes(weights: Weights) -> int:
    return int(sum(np.asarray(value).nbytes for value in weights.values()))
