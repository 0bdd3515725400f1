"""Compressed model updates: a client's delta (local − global) as float16, int8 or top-k.

Uploads dominate a federation's traffic, and a delta tolerates far more loss than the
model itself, so a run may choose one scheme for every client:

- ``float16``: the delta in half precision. For ``|d| ≤ 65504`` the error is at most
  ``|d|·2⁻¹¹ + 2⁻²⁵`` (relative rounding plus half the smallest subnormal).
- ``int8``: symmetric per-tensor quantisation, ``q = round(d / s)`` with
  ``s = max|d| / 127`` and ``q ∈ [-127, 127]``; the error is at most ``s / 2``.
- ``topk``: the ``k = ceil(fraction · size)`` (at least 1) entries of largest magnitude,
  as ascending flat indices plus values; every other entry is dropped.

Integer and bool tensors (BatchNorm's ``num_batches_tracked``), 0-d and empty tensors and any
tensor a scheme cannot hold (a delta that overflows, half precision's range) travel
``exact``: the local value itself, so they arrive bit for bit. Decoding gives the local
model back in the global model's dtypes and shapes, and validates everything it reads:
a payload comes from an untrusted client.

Error feedback: :func:`encode_update` returns the residual ``(delta + old residual) −
decoded delta``, which the client adds to its next delta, so what the server receives
summed over rounds stays within one residual of what the client actually learned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedloom.core.errors import ConfigError, SerializationError, ValidationError
from fedloom.core.weights import Weights, check_compatible

#: the schemes a run may choose; "exact" is per tensor only, never a run's scheme
SCHEMES = ("float16", "int8", "topk")
#: per scheme, the tensor kinds a payload made with it may hold
KINDS: dict[str, frozenset[str]] = {scheme: frozenset({"exact", scheme}) for scheme in SCHEMES}
INT8_LEVELS = 127
#: dtypes a top-k index tensor may have
INDEX_DTYPES = (np.dtype("int32"), np.dtype("int64"))


@dataclass(frozen=True)
class CompressionSpec:
    """A run's choice: the scheme, and for ``topk`` the fraction of each tensor sent."""

    scheme: str
    topk_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"compression scheme {self.scheme!r} is unknown (use one of: {', '.join(SCHEMES)})")
        fraction = self.topk_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"compression topk_fraction must be a number in (0, 1], got {fraction!r}")


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor of a compressed update.

    ``values`` is the local tensor (``exact``), the delta (``float16``, ``int8``) or the
    kept entries (``topk``, with ``indices`` into the flattened tensor); ``scale`` is
    int8's step.
    """

    kind: str
    values: np.ndarray
    indices: np.ndarray | None = None
    scale: float | None = None


@dataclass(frozen=True)
class CompressedUpdate:
    """A whole update as it travels: the run's scheme and one encoding per model tensor."""

    scheme: str
    tensors: Mapping[str, EncodedTensor]


def _lossy(start: np.ndarray, delta: np.ndarray, spec: CompressionSpec) -> EncodedTensor | None:
    """``delta`` under the run's scheme, or None where the scheme cannot hold it."""
    if spec.scheme == "float16":
        with np.errstate(over="ignore"):
            half = delta.astype(np.float16)
        return EncodedTensor("float16", half) if np.isfinite(half).all() else None
    if spec.scheme == "int8":
        peak = float(np.abs(delta).max())
        scale = peak / INT8_LEVELS
        if peak > 0 and not (scale > 0 and math.isfinite(scale)):
            return None
        steps = np.zeros(delta.shape) if peak == 0 else np.rint(delta / scale)
        return EncodedTensor("int8", np.clip(steps, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale=scale)
    flat = delta.ravel()
    k = min(flat.size, max(1, math.ceil(spec.topk_fraction * flat.size)))
    chosen = np.sort(np.argpartition(-np.abs(flat), k - 1)[:k])
    index_dtype = np.int32 if flat.size <= np.iinfo(np.int32).max else np.int64
    with np.errstate(over="ignore"):
        values = flat[chosen].astype(start.dtype)
    return EncodedTensor("topk", values, indices=chosen.astype(index_dtype)) if np.isfinite(values).all() else None


def _compressible(base: np.ndarray) -> bool:
    """Only non-empty floating-point tensors with at least one axis are encoded lossily."""
    return base.dtype.kind == "f" and base.ndim > 0 and base.size > 0


def _exact(value: np.ndarray, base: np.ndarray) -> EncodedTensor:
    """The local tensor itself, in the global model's dtype: what arrives bit for bit."""
    return EncodedTensor("exact", np.array(value, dtype=base.dtype, copy=True))


def _check_residual(residual: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray]) -> None:
    for name, value in residual.items():
        if name not in start or start[name].dtype.kind != "f":
            raise ValidationError(
                f"residual {name!r} names no floating-point tensor of the model (it was kept for another"
                " model: remove the client's compression state)"
            )
        if np.shape(value) != start[name].shape:
            raise ValidationError(f"residual {name!r} has shape {np.shape(value)}, expected {start[name].shape}")
        if not np.isfinite(value).all():
            raise ValidationError(f"residual {name!r} is not finite: start error feedback again with no residual")


def encode_update(
    local: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    spec: CompressionSpec,
    residual: Mapping[str, np.ndarray] | None = None,
) -> tuple[CompressedUpdate, Weights]:
    """``local``'s change from ``start`` (the global model) under ``spec``, and the new residual.

    ``residual`` (float64, from the previous call) is added to the delta first; the
    returned one holds what this update still owes, per lossy tensor (exact tensors owe
    nothing and are left out).
    """
    check_compatible(local, start)
    _check_residual(residual or {}, start)
    tensors: dict[str, EncodedTensor] = {}
    owed: Weights = {}
    for name, base in start.items():
        value = np.asarray(local[name])
        if not _compressible(base):
            tensors[name] = _exact(value, base)
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            wanted = value.astype(np.float64) - base
            if residual and name in residual:
                wanted = wanted + residual[name]
        encoded = _lossy(base, wanted, spec) if np.isfinite(wanted).all() else None
        decoded = _decode_tensor(name, encoded, base) if encoded is not None else None
        if encoded is None or decoded is None or not np.isfinite(decoded).all():
            tensors[name] = _exact(value, base)
            continue
        tensors[name] = encoded
        owed[name] = wanted - (decoded.astype(np.float64) - base)
    return CompressedUpdate(spec.scheme, tensors), owed


def _refuse(name: str, field: str, problem: str) -> SerializationError:
    return SerializationError(f"compressed tensor {name[:100]!r} field {field!r}: {problem}")


def _check_values(name: str, enc: EncodedTensor, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if not isinstance(enc.values, np.ndarray):
        raise _refuse(name, "values", f"must be an array, got {type(enc.values).__name__}")
    if enc.values.dtype != dtype:
        raise _refuse(name, "dtype", f"is {enc.values.dtype}, but {enc.kind} carries {dtype}")
    if enc.values.shape != shape:
        raise _refuse(name, "shape", f"is {enc.values.shape}, expected {shape}")
    if enc.values.dtype.kind == "f" and not np.isfinite(enc.values).all():
        raise _refuse(name, "values", "contain NaN or Inf")


def _topk_delta(name: str, enc: EncodedTensor, base: np.ndarray) -> np.ndarray:
    """The dense delta a top-k tensor stands for, after checking its indices and values."""
    indices = enc.indices
    if not isinstance(indices, np.ndarray) or indices.dtype not in INDEX_DTYPES:
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        raise _refuse(name, "indices", f"must be an int32 or int64 array, got {got}")
    k = indices.size
    if indices.ndim != 1 or not 1 <= k <= base.size:
        raise _refuse(name, "k", f"must be a 1-d count in [1, {base.size}] (the tensor's size), got {indices.shape}")
    _check_values(name, enc, base.dtype, (k,))
    if indices.min() < 0 or indices.max() >= base.size:
        bad = int(indices.min() if indices.min() < 0 else indices.max())
        raise _refuse(name, "indices", f"index {bad} is outside [0, {base.size - 1}]")
    steps = np.diff(indices)
    if (steps == 0).any():
        raise _refuse(name, "indices", f"index {int(indices[1:][steps == 0][0])} appears more than once")
    if (steps < 0).any():
        raise _refuse(name, "indices", "must be in ascending order")
    delta = np.zeros(base.size)
    delta[indices] = enc.values
    return delta.reshape(base.shape)


def _check_kind(name: str, enc: EncodedTensor, base: np.ndarray) -> None:
    if not isinstance(enc, EncodedTensor) or enc.kind not in ("exact", *SCHEMES):
        kind = enc.kind if isinstance(enc, EncodedTensor) else type(enc).__name__
        raise _refuse(name, "kind", f"{str(kind)[:20]!r} is unknown (use exact, {', '.join(SCHEMES)})")
    if enc.kind != "exact" and not _compressible(base):
        raise _refuse(name, "kind", f"is {enc.kind}, but a {base.dtype} tensor of shape {base.shape} travels exact")
    if enc.kind != "int8" and enc.scale is not None:
        raise _refuse(name, "scale", f"is only for int8, not {enc.kind}")
    if enc.kind != "topk" and enc.indices is not None:
        raise _refuse(name, "indices", f"are only for topk, not {enc.kind}")


def _decode_tensor(name: str, enc: EncodedTensor, base: np.ndarray) -> np.ndarray:
    """The local tensor ``enc`` stands for, in ``base``'s dtype and shape; refuses malformed input."""
    _check_kind(name, enc, base)
    if enc.kind == "exact":
        _check_values(name, enc, base.dtype, base.shape)
        return np.array(enc.values, copy=True)
    if enc.kind == "float16":
        _check_values(name, enc, np.dtype(np.float16), base.shape)
        delta = enc.values.astype(np.float64)
    elif enc.kind == "int8":
        _check_values(name, enc, np.dtype(np.int8), base.shape)
        scale = enc.scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale >= 0):
            raise _refuse(name, "scale", f"must be a finite number >= 0, got {scale!r}")
        if (enc.values < -INT8_LEVELS).any():
            raise _refuse(name, "values", f"must lie in [-{INT8_LEVELS}, {INT8_LEVELS}] (symmetric int8)")
        delta = enc.values.astype(np.float64) * float(scale)
    else:
        delta = _topk_delta(name, enc, base)
    with np.errstate(over="ignore", invalid="ignore"):
        return (base.astype(np.float64) + delta).astype(base.dtype)


def decode_update(update: CompressedUpdate, start: Mapping[str, np.ndarray]) -> Weights:
    """The local model ``update`` encodes against ``start``: every check a hostile payload needs.

    Raises :class:`SerializationError` naming the tensor and the field: an unknown
    scheme or kind, a dtype or shape the kind does not carry, a bad scale, top-k indices
    out of range, repeated or unsorted, a ``k`` larger than the tensor, missing or
    extra tensors, or a result that is not finite.
    """
    if update.scheme not in SCHEMES:
        raise SerializationError(f"compression field 'scheme' {str(update.scheme)[:20]!r} is unknown")
    missing = sorted(set(start) - set(update.tensors))
    extra = sorted(set(update.tensors) - set(start))
    if missing or extra:
        raise SerializationError(f"compressed update tensors: missing {missing[:5]}, unexpected {extra[:5]}")
    out: Weights = {}
    for name, base in start.items():
        enc = update.tensors[name]
        if isinstance(enc, EncodedTensor) and enc.kind in SCHEMES and enc.kind not in KINDS[update.scheme]:
            raise _refuse(name, "kind", f"is {enc.kind}, but the update's scheme is {update.scheme}")
        decoded = _decode_tensor(name, enc, base)
        if decoded.dtype.kind == "f" and not np.isfinite(decoded).all():
            raise _refuse(name, "values", "decode to NaN or Inf against the global model")
        out[name] = decoded
    return out


#: the FitConfig.extra key naming a run's compression (a JSON object: scheme, topk_fraction)
EXTRA_KEY = "compression"


def spec_from_extra(extra: Mapping[str, object]) -> CompressionSpec | None:
    """The run's compression from a FitConfig's ``extra`` (None when the run sends plain models)."""
    value = extra.get(EXTRA_KEY)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not set(value) <= {"scheme", "topk_fraction"} or "scheme" not in value:
        raise ConfigError(f"fit config field {EXTRA_KEY!r} must be an object with 'scheme' (and 'topk_fraction')")
    scheme, fraction = value["scheme"], value.get("topk_fraction", 0.01)
    if not isinstance(scheme, str) or isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"fit config field {EXTRA_KEY!r}: 'scheme' must be a string, 'topk_fraction' a number")
    return CompressionSpec(scheme, float(fraction))


def spec_to_extra(spec: CompressionSpec) -> dict[str, object]:
    """What :func:`spec_from_extra` reads back: the spec as a FitConfig ``extra`` entry's value."""
    return {"scheme": spec.scheme, "topk_fraction": spec.topk_fraction}
