"""Named model tensors and their validation.

A model crosses every fedloom boundary as ``Weights``: a plain ``dict`` of tensor name
to NumPy array. Keeping it a dict (not a framework object) is what lets the same
aggregation code serve NumPy, PyTorch and the HTTP wire format.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.core.errors import NonFiniteError, ValidationError, WeightsMismatchError

Weights = dict[str, np.ndarray]

#: dtypes a model tensor may have; anything else (object, str, complex) is refused.
ALLOWED_DTYPES: frozenset[np.dtype] = frozenset(
    np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
    )
)


def check_structure(weights: Mapping[str, object]) -> None:
    """Raise unless ``weights`` maps non-empty string names to allowed-dtype arrays."""
    if not isinstance(weights, Mapping):
        raise ValidationError(f"weights must be a dict of name -> numpy array, got {type(weights).__name__}")
    if not weights:
        raise ValidationError("weights are empty: a model needs at least one tensor")
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"tensor name {name!r} must be a non-empty string")
        if not isinstance(value, np.ndarray):
            raise ValidationError(f"tensor {name!r} must be a numpy array, got {type(value).__name__}")
        if value.dtype not in ALLOWED_DTYPES:
            allowed = ", ".join(sorted(str(d) for d in ALLOWED_DTYPES))
            raise ValidationError(
                f"tensor {name!r} has dtype {value.dtype}, which is not allowed (use one of: {allowed})"
            )


def check_finite(weights: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor holding NaN or Inf."""
    for name, value in weights.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            nan = int(np.isnan(value).sum())
            inf = int(np.isinf(value).sum())
            raise NonFiniteError(f"tensor {name!r} contains {nan} NaN and {inf} Inf values")


def check_compatible(weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`WeightsMismatchError` unless names, shapes and dtypes equal ``reference``'s."""
    missing = sorted(set(reference) - set(weights))
    extra = sorted(set(weights) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if extra:
            parts.append(f"unexpected tensors {extra}")
        raise WeightsMismatchError("weights do not match the model: " + "; ".join(parts))
    for name, ref in reference.items():
        got = weights[name]
        if got.shape != ref.shape:
            raise WeightsMismatchError(f"tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        if got.dtype != ref.dtype:
            raise WeightsMismatchError(f"tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}")


def validate_weights(weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None = None) -> None:
    """Full check of an incoming model: structure, then (if given) ``reference`` match, then finiteness."""
    check_structure(weights)
    if reference is not None:
        check_compatible(weights, reference)
    check_finite(weights)


def copy_weights(weights: Mapping[str, np.ndarray]) -> Weights:
    """A deep copy, so a caller can never mutate a model someone else holds."""
    return {name: np.array(value, copy=True) for name, value in weights.items()}


def weights_equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True when both have the same names and bit-identical tensors (dtype and shape included)."""
    if set(a) != set(b):
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def num_parameters(weights: Mapping[str, np.ndarray]) -> int:
    """Total number of scalar values across all tensors."""
    return int(sum(v.size for v in weights.values()))


def nbytes(weights: Mapping[str, np.ndarray]) -> int:
    """Total size of the tensor data in bytes."""
    return int(sum(v.nbytes for v in weights.values()))
