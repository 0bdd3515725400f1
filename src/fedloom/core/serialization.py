"""Models on the wire and on disk: safetensors bytes with a fedloom metadata header.

safetensors is used because loading it cannot execute code (unlike pickle or
``torch.load``), and its header carries string metadata, which holds the round, the
client, the sample count and a SHA-256 of the tensor contents so tampering is detected.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedloom.core.errors import IntegrityError, PayloadTooLargeError, SerializationError, ValidationError
from fedloom.core.weights import ALLOWED_DTYPES, Weights, check_structure

FORMAT_TAG = "fedloom/1"
#: default ceiling on one payload; callers (e.g. the HTTP server) may set their own.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
_MAX_HEADER_BYTES = 16 * 1024 * 1024
#: largest round a header may name (rounds are 32-bit integers in the store); -1 means unknown
MAX_ROUND = 2**31 - 1
#: largest sample count a header may carry (64-bit in the store); 0 means unknown
MAX_NUM_SAMPLES = 2**63 - 1
#: an integer header field: an optional sign and at most 20 digits (int64 fits; 10**400 does not)
_INTEGER = re.compile(r"-?[0-9]{1,20}")


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


#: safetensors dtype names fedloom reads, and the NumPy dtype each becomes (weights.ALLOWED_DTYPES)
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F16": np.dtype("float16"),
    "F32": np.dtype("float32"),
    "F64": np.dtype("float64"),
    "I8": np.dtype("int8"),
    "I16": np.dtype("int16"),
    "I32": np.dtype("int32"),
    "I64": np.dtype("int64"),
    "U8": np.dtype("uint8"),
    "BOOL": np.dtype("bool"),
}
assert frozenset(SAFETENSORS_DTYPES.values()) == ALLOWED_DTYPES


def _read_header(data: bytes) -> dict[str, object]:
    """The JSON header, refused when it is not an object (or nested too deeply to parse safely)."""
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"model payload header is not valid JSON: {exc}") from None
    except RecursionError:
        raise SerializationError("model payload header is JSON nested too deeply to be a safetensors header") from None
    if not isinstance(header, dict):
        raise SerializationError("model payload header must be a JSON object of tensor name -> entry")
    return header


def _check_dtypes(header: Mapping[str, object]) -> None:
    """Refuse, before any tensor is decoded, every tensor whose dtype fedloom does not support."""
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(dtype, str):
            raise SerializationError(f"model payload header entry {name[:100]!r} is not a tensor (it has no dtype)")
        if dtype not in SAFETENSORS_DTYPES:
            allowed = ", ".join(SAFETENSORS_DTYPES)
            raise SerializationError(
                f"tensor {name[:100]!r} has dtype {dtype[:20]}, which fedloom does not support"
                f" (convert it to one of: {allowed}; e.g. bfloat16 and float8 to F32)"
            )


def _read_metadata(header: Mapping[str, object]) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_TAG:
        raise SerializationError(f"model payload has no fedloom header (expected format {FORMAT_TAG!r})")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise SerializationError("model payload metadata must map names to strings")
    return {str(k): v for k, v in metadata.items()}


def _parse_int(metadata: Mapping[str, str], key: str, low: int, high: int) -> int:
    """An integer header field within [low, high]: what a database column and NumPy can hold."""
    text = metadata.get(key, "")
    if not _INTEGER.fullmatch(text):
        raise SerializationError(f"model header field {key!r} is missing or not an integer") from None
    value = int(text)
    if not low <= value <= high:
        raise SerializationError(f"model header field {key!r} = {value} is outside [{low}, {high}]")
    return value


def _decode(data: bytes, header: Mapping[str, object]) -> Weights:
    """The tensors of a safetensors payload whose envelope and header were read; dtypes are checked
    first, so no unsupported dtype ever reaches the safetensors loader."""
    _check_dtypes(header)
    try:
        weights = dict(st_load(bytes(data)))
    except (SafetensorError, ValueError, TypeError, KeyError, OverflowError) as exc:
        raise SerializationError(f"model payload is not valid safetensors: {exc}") from None
    try:
        check_structure(weights)
    except ValidationError as exc:
        raise SerializationError(f"model payload holds invalid tensors: {exc}") from None
    return weights


def from_plain_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Weights:
    """The tensors of any safetensors payload (no fedloom header needed), with the same checks as
    :func:`from_bytes` on size, header and dtypes: for model files made by other tools."""
    _check_envelope(data, max_bytes)
    return _decode(data, _read_header(data))


def from_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Weights, ModelHeader]:
    """Parse and verify a payload made by :func:`to_bytes`.

    Raises :class:`PayloadTooLargeError` before parsing anything oversized,
    :class:`SerializationError` on garbage, and :class:`IntegrityError` when the
    tensors do not hash to the value in the header.
    """
    _check_envelope(data, max_bytes)
    raw_header = _read_header(data)
    metadata = _read_metadata(raw_header)
    weights = _decode(data, raw_header)
    actual = content_hash(weights)
    if actual != metadata.get("sha256"):
        raise IntegrityError(
            f"model payload hash mismatch: header says {metadata.get('sha256')}, tensors hash to {actual}"
        )
    reserved = {"format", "sha256", "round", "client_id", "num_samples"}
    header = ModelHeader(
        sha256=actual,
        round=_parse_int(metadata, "round", -1, MAX_ROUND),
        client_id=metadata.get("client_id", ""),
        num_samples=_parse_int(metadata, "num_samples", 0, MAX_NUM_SAMPLES),
        extra={k: v for k, v in metadata.items() if k not in reserved} or None,
    )
    return weights, header
