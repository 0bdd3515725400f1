"""Models on the wire and on disk: safetensors bytes with a fedloom metadata header.

safetensors is used because loading it cannot execute code (unlike pickle or
``torch.load``), and its header carries string metadata, which holds the round, the
client, the sample count and a SHA-256 of the tensor contents so tampering is detected.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedloom.core.errors import IntegrityError, PayloadTooLargeError, SerializationError, ValidationError
from fedloom.core.weights import Weights, check_structure

FORMAT_TAG = "fedloom/1"
#: default ceiling on one payload; callers (e.g. the HTTP server) may set their own.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
_MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelHeader:
    """What travels beside the tensors. ``round``/``num_samples`` are -1/0 when unknown."""

    sha256: str
    round: int = -1
    client_id: str = ""
    num_samples: int = 0
    extra: Mapping[str, str] | None = None


def _c_order(value: np.ndarray) -> np.ndarray:
    """C-contiguous without promoting 0-d scalars to 1-d (np.ascontiguousarray would)."""
    return value if value.flags.c_contiguous else np.array(value, order="C")


def content_hash(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes in name order: equal models hash equal."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = _c_order(np.asarray(weights[name]))
        meta = json.dumps([name, value.dtype.str, list(value.shape)]).encode()
        digest.update(struct.pack("<Q", len(meta)))
        digest.update(meta)
        digest.update(value.tobytes())
    return digest.hexdigest()


def to_bytes(
    weights: Mapping[str, np.ndarray],
    *,
    round: int = -1,
    client_id: str = "",
    num_samples: int = 0,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """Serialise ``weights`` to safetensors bytes with a fedloom header."""
    check_structure(weights)
    metadata = {
        "format": FORMAT_TAG,
        "sha256": content_hash(weights),
        "round": str(int(round)),
        "client_id": str(client_id),
        "num_samples": str(int(num_samples)),
    }
    if extra:
        clash = set(extra) & set(metadata)
        if clash:
            raise ValidationError(f"extra header keys {sorted(clash)} are reserved by fedloom")
        metadata.update({str(k): str(v) for k, v in extra.items()})
    tensors = {name: _c_order(value) for name, value in weights.items()}
    return bytes(st_save(tensors, metadata=metadata))


def _check_envelope(data: bytes, max_bytes: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"model payload must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"model payload is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if len(data) < 8:
        raise SerializationError("model payload is too short to be safetensors (fewer than 8 bytes)")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    if header_len > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise SerializationError(f"model payload declares a {header_len}-byte header, which does not fit the payload")


def _read_metadata(data: bytes) -> dict[str, str]:
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"model payload header is not valid JSON: {exc}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_TAG:
        raise SerializationError(f"model payload has no fedloom header (expected format {FORMAT_TAG!r})")
    return {str(k): str(v) for k, v in metadata.items()}


def _parse_int(metadata: Mapping[str, str], key: str) -> int:
    try:
        return int(metadata[key])
    except (KeyError, ValueError):
        raise SerializationError(f"model header field {key!r} is missing or not an integer") from None


def from_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Weights, ModelHeader]:
    """Parse and verify a payload made by :func:`to_bytes`.

    Raises :class:`PayloadTooLargeError` before parsing anything oversized,
    :class:`SerializationError` on garbage, and :class:`IntegrityError` when the
    tensors do not hash to the value in the header.
    """
    _check_envelope(data, max_bytes)
    metadata = _read_metadata(data)
    try:
        weights = dict(st_load(bytes(data)))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise SerializationError(f"model payload is not valid safetensors: {exc}") from None
    try:
        check_structure(weights)
    except ValidationError as exc:
        raise SerializationError(f"model payload holds invalid tensors: {exc}") from None
    actual = content_hash(weights)
    if actual != metadata.get("sha256"):
        raise IntegrityError(
            f"model payload hash mismatch: header says {metadata.get('sha256')}, tensors hash to {actual}"
        )
    reserved = {"format", "sha256", "round", "client_id", "num_samples"}
    header = ModelHeader(
        sha256=actual,
        round=_parse_int(metadata, "round"),
        client_id=metadata.get("client_id", ""),
        num_samples=_parse_int(metadata, "num_samples"),
        extra={k: v for k, v in metadata.items() if k not in reserved} or None,
    )
    return weights, header
