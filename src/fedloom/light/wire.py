"""fedloom's model payload (safetensors + a fedloom metadata header), read and written by hand.

A light device has no ``safetensors`` package, so this module implements the format
itself: 8 bytes little-endian header length N, N bytes of JSON (tensor name ->
``{"dtype", "shape", "data_offsets"}`` plus ``"__metadata__"``: strings only), then the
tensors' raw little-endian bytes, back to back. What it writes is what
``fedloom.core.serialization.to_bytes`` writes (a test reads each with the other), and
the content hash is the same one, so the aggregator's integrity check passes.

Everything read is untrusted: the payload and header sizes are bounded before parsing,
every entry must name an allowed dtype and a shape whose byte length is exactly its
offsets' span, offsets must lie in the data and tile it without gaps or overlaps, and
the tensors must hash to the header's ``sha256``. Any problem is a :class:`WireError`
naming the tensor or field. Only NumPy and the standard library are imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "FORMAT_TAG",
    "Payload",
    "WireError",
    "content_hash",
    "decode",
    "encode",
]

FORMAT_TAG = "fedloom/1"
#: the largest payload read (the aggregator's default upload limit is the same order)
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: the largest JSON header read: a few hundred bytes per tensor is plenty
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: the most dimensions one tensor may have
MAX_DIMS = 32
#: safetensors dtype name -> little-endian NumPy dtype (the ones fedloom accepts)
DTYPES: dict[str, np.dtype] = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class WireError(ValueError):
    """A payload that is not a valid fedloom model: the message names the tensor or field."""


@dataclass(frozen=True)
class Payload:
    """A decoded payload: the tensors and the header's string metadata (``sha256`` verified)."""

    weights: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.metadata["sha256"]


def _little_endian(name: str, value: object) -> np.ndarray:
    """``value`` as a C-ordered little-endian array of an allowed dtype (0-d stays 0-d)."""
    array = np.asarray(value)
    if not isinstance(name, str) or not name:
        raise WireError(f"tensor names must be non-empty strings, got {name!r}")
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype not in _NAMES:
        allowed = ", ".join(str(d) for d in DTYPES.values())
        raise WireError(f"tensor {name!r} has dtype {array.dtype}, which fedloom does not carry (use one of {allowed})")
    return np.asarray(array, dtype=dtype, order="C")  # asarray keeps 0-d tensors 0-d


def content_hash(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes in name order (fedloom's model hash)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = _little_endian(name, weights[name])
        meta = json.dumps([name, value.dtype.str, list(value.shape)]).encode()
        digest.update(struct.pack("<Q", len(meta)))
        digest.update(meta)
        digest.update(value.tobytes())
    return digest.hexdigest()


def encode(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """The payload of ``weights`` with ``metadata`` plus fedloom's ``format`` and ``sha256`` fields
    (``round``, ``client_id`` and ``num_samples`` default to "unknown": -1, "" and 0, as core's)."""
    arrays = {name: _little_endian(name, value) for name, value in weights.items()}
    meta = {"round": "-1", "client_id": "", "num_samples": "0", **{str(k): str(v) for k, v in metadata.items()}}
    meta.update(format=FORMAT_TAG, sha256=content_hash(arrays))
    header: dict[str, object] = {"__metadata__": meta}
    offset, chunks = 0, []
    for name in sorted(arrays):
        data = arrays[name].tobytes()
        header[name] = {
            "dtype": _NAMES[arrays[name].dtype],
            "shape": list(arrays[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _header(data: bytes, max_bytes: int) -> tuple[dict[str, object], int]:
    """The JSON header and where the tensor bytes start, after the size checks."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"a model payload must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"model payload is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if len(data) < 8:
        raise WireError("model payload is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise WireError(f"model payload declares a {length}-byte header, which does not fit (or is over the limit)")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"model payload header is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict):
        raise WireError("model payload header must be a JSON object of tensor name -> entry")
    return header, 8 + length


def _metadata(header: dict[str, object]) -> dict[str, str]:
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
        raise WireError(f"model payload has no fedloom header (expected format {FORMAT_TAG!r})")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WireError("model payload metadata must map names to strings")
    return dict(meta)


def _entry(name: str, entry: object, size: int) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """One tensor entry checked against the data section's ``size``: dtype, shape, offsets."""
    shown = name[:100]
    if not name or not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise WireError(f"model payload entry {shown!r} must be exactly {{dtype, shape, data_offsets}}")
    dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise WireError(f"tensor {shown!r} has dtype {str(entry['dtype'])[:20]!r}; allowed: {', '.join(DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_natural(d) for d in shape):
        raise WireError(f"tensor {shown!r} has shape {str(shape)[:80]}, not a list of at most {MAX_DIMS} sizes >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets):
        raise WireError(f"tensor {shown!r} has data_offsets {str(offsets)[:80]}, not two integers >= 0")
    begin, end = offsets
    if not begin <= end <= size:
        raise WireError(f"tensor {shown!r} has data_offsets [{begin}, {end}] outside the {size} data bytes")
    if math.prod(shape) * dtype.itemsize != end - begin:
        raise WireError(
            f"tensor {shown!r}: shape {shape} of {entry['dtype']} needs {math.prod(shape) * dtype.itemsize}"
            f" bytes but its data_offsets span {end - begin}"
        )
    return dtype, tuple(shape), begin, end


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Payload:
    """Parse and verify a fedloom payload (see the module docstring); :class:`WireError` otherwise."""
    header, start = _header(data, max_bytes)
    metadata = _metadata(header)
    size = len(data) - start
    entries = {name: _entry(name, entry, size) for name, entry in header.items()}
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items())
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise WireError(
                f"tensor {name[:100]!r} starts at byte {begin}, not {position}: the data has a gap or overlap"
            )
        position = end
    if position != size:
        raise WireError(f"the tensors cover {position} of the {size} data bytes")
    weights = {
        name: np.frombuffer(bytes(data[start + begin : start + end]), dtype=dtype).reshape(shape).copy()
        for name, (dtype, shape, begin, end) in entries.items()
    }
    actual = content_hash(weights)
    if metadata.get("sha256") != actual:
        raise WireError(
            f"model payload hash mismatch: the header says {metadata.get('sha256')!r}, tensors hash to {actual}"
        )
    return Payload(weights, metadata)
