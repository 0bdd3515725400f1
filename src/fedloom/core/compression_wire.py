"""How a compressed update travels: ordinary fedloom safetensors plus a ``compression`` header field.

Each model tensor ``<name>`` is one safetensors tensor (the exact value, the float16 or
int8 delta, or top-k's kept values); top-k's indices ride beside it as
``fedloom.compression.indices/<name>``. The header field ``compression`` is JSON::

    {"scheme": "int8", "tensors": {"<name>": {"kind": "int8", "scale": 0.0012}, ...}}

with ``"k"`` for top-k entries. The payload is hashed, size-checked and dtype-checked by
:mod:`fedloom.core.serialization` like any other; this module reads the header into a
:class:`~fedloom.core.compression.CompressedUpdate`, refusing anything it does not
describe exactly, and :func:`~fedloom.core.compression.decode_update` checks the
arrays against the global model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from fedloom.core.compression import SCHEMES, CompressedUpdate, EncodedTensor
from fedloom.core.errors import SerializationError, ValidationError
from fedloom.core.weights import Weights

#: the header field holding the compression description
HEADER_FIELD = "compression"
#: where top-k's indices travel, keyed by the tensor they belong to
INDEX_PREFIX = "fedloom.compression.indices/"
#: the metrics a compressed update is reported with: its size on the wire and its model's uncompressed size
WIRE_BYTES_METRIC = "upload_wire_bytes"
TENSOR_BYTES_METRIC = "upload_tensor_bytes"


def _entry(enc: EncodedTensor) -> dict[str, object]:
    if enc.kind == "int8":
        return {"kind": "int8", "scale": enc.scale}
    if enc.kind == "topk":
        return {"kind": "topk", "k": int(enc.values.size)}
    return {"kind": enc.kind}


def to_wire(update: CompressedUpdate) -> tuple[Weights, dict[str, str]]:
    """The tensors and the ``extra`` header entries to hand to :func:`fedloom.core.serialization.to_bytes`."""
    tensors: Weights = {}
    entries: dict[str, object] = {}
    for name, enc in update.tensors.items():
        if name.startswith(INDEX_PREFIX):
            raise ValidationError(f"tensor {name!r} uses the prefix {INDEX_PREFIX!r}, which compression reserves")
        tensors[name] = enc.values
        if enc.indices is not None:
            tensors[INDEX_PREFIX + name] = enc.indices
        entries[name] = _entry(enc)
    header = {"scheme": update.scheme, "tensors": entries}
    return tensors, {HEADER_FIELD: json.dumps(header, allow_nan=False)}


def _refuse(name: str, field: str, problem: str) -> SerializationError:
    return SerializationError(f"compression header for tensor {name[:100]!r} field {field!r}: {problem}")


def _read_description(extra: Mapping[str, str] | None) -> tuple[str, dict[str, object]]:
    """The scheme and the per-tensor entries of the header field, each checked for type."""
    text = (extra or {}).get(HEADER_FIELD)
    if text is None:
        raise SerializationError(f"payload has no {HEADER_FIELD!r} header field: it is not a compressed update")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise SerializationError(f"header field {HEADER_FIELD!r} is not valid JSON") from None
    if not isinstance(header, dict) or set(header) != {"scheme", "tensors"}:
        raise SerializationError(f"header field {HEADER_FIELD!r} must be an object with exactly 'scheme' and 'tensors'")
    scheme, entries = header["scheme"], header["tensors"]
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        shown = scheme[:20] if isinstance(scheme, str) else type(scheme).__name__
        raise SerializationError(f"compression field 'scheme' {shown!r} is unknown (use one of: {', '.join(SCHEMES)})")
    if not isinstance(entries, dict):
        raise SerializationError("compression field 'tensors' must be an object of tensor name -> entry")
    return scheme, entries


def _number(name: str, entry: Mapping[str, object], key: str) -> int | float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(name, key, f"must be a number, got {type(value).__name__}")
    return value


def _encoded(name: str, entry: object, tensors: Mapping[str, np.ndarray]) -> EncodedTensor:
    """One tensor's encoding from its header entry and its arrays; ``k`` must match both arrays."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise _refuse(name, "kind", "the entry must be an object with a string 'kind'")
    kind = entry["kind"]
    allowed = {"exact": {"kind"}, "float16": {"kind"}, "int8": {"kind", "scale"}, "topk": {"kind", "k"}}
    if kind not in allowed:
        raise _refuse(name, "kind", f"{kind[:20]!r} is unknown (use exact, {', '.join(SCHEMES)})")
    if set(entry) != allowed[kind]:
        raise _refuse(name, kind, f"entry keys are {sorted(entry)}, expected {sorted(allowed[kind])}")
    if name not in tensors:
        raise _refuse(name, "values", "the payload holds no tensor of that name")
    values = tensors[name]
    if kind == "int8":
        scale = float(_number(name, entry, "scale"))
        if not (math.isfinite(scale) and scale >= 0):
            raise _refuse(name, "scale", f"must be finite and >= 0, got {scale!r}")
        return EncodedTensor(kind, values, scale=scale)
    if kind != "topk":
        return EncodedTensor(kind, values)
    k = _number(name, entry, "k")
    indices = tensors.get(INDEX_PREFIX + name)
    if indices is None:
        raise _refuse(name, "indices", f"the payload holds no {INDEX_PREFIX + name!r} tensor")
    if not isinstance(k, int) or k != values.size or k != indices.size:
        raise _refuse(name, "k", f"is {k!r}, but the payload holds {values.size} values and {indices.size} indices")
    return EncodedTensor(kind, values, indices=indices)


def from_wire(tensors: Mapping[str, np.ndarray], extra: Mapping[str, str] | None) -> CompressedUpdate:
    """The compressed update a payload's tensors and header describe, or :class:`SerializationError`.

    Every payload tensor must be described (no stray arrays ride along) and every
    described tensor present; the arrays themselves are checked by ``decode_update``.
    """
    scheme, entries = _read_description(extra)
    described = set(entries)
    topk = [name for name, entry in entries.items() if isinstance(entry, dict) and entry.get("kind") == "topk"]
    described |= {INDEX_PREFIX + name for name in topk}
    stray = sorted(set(tensors) - described)
    if stray:
        raise SerializationError(f"payload holds tensors the {HEADER_FIELD!r} header does not describe: {stray[:5]}")
    return CompressedUpdate(scheme, {name: _encoded(name, entry, tensors) for name, entry in entries.items()})
