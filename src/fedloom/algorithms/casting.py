"""Casting the result of aggregation maths back into a model tensor's shape and dtype.

NumPy arithmetic on a 0-d array returns a NumPy *scalar*, not an array: ``a + b`` with
``a.shape == ()`` is an ``np.float64``. A model with 0-d tensors (BatchNorm's int64
``num_batches_tracked``, a learned scalar temperature) would then leave an aggregate that
``validate_weights`` refuses, and the round could never close. Every aggregation rule ends
its maths with :func:`cast_like` (and keeps float64 working tensors with
:func:`float64`), so shape and dtype survive whatever the arithmetic did, in one place.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_FLOAT64_MAX = float(np.finfo(np.float64).max)


def float64(value: npt.ArrayLike) -> np.ndarray:
    """``value`` as a float64 ndarray (a 0-d array, never a NumPy scalar)."""
    return np.asarray(value, np.float64)


def saturate(value: npt.ArrayLike) -> np.ndarray:
    """``value`` as float64 with ±Inf clamped to float64's largest finite magnitude.

    For steps that can genuinely leave float64 although every input is finite (the
    pseudo-gradient between a model at 1e308 and one at -1e308, its square in FedAdam):
    they saturate instead of turning the next global model into Inf or NaN, which would
    leave a round that can never close. Inputs are validated finite, so an Inf here can
    only come from such an overflow; NaN is left as it is (and refused downstream).
    """
    array = np.asarray(value, np.float64)
    return np.clip(array, -_FLOAT64_MAX, _FLOAT64_MAX)


def _integer_bounds(dtype: np.dtype) -> tuple[float, float]:
    """The widest float range that still casts into ``dtype`` without wrapping around.

    ``float(np.iinfo(np.int64).max)`` is 2**63, which does not fit int64; the largest
    float below it does.
    """
    info = np.iinfo(dtype)
    top = float(info.max)
    if int(top) > info.max:
        top = float(np.nextafter(top, 0.0))
    return float(info.min), top


def cast_like(value: npt.ArrayLike, reference: np.ndarray) -> np.ndarray:
    """``value`` as a new ndarray with ``reference``'s shape and dtype.

    Floating-point values going into an integer tensor (a mean of step counters) are
    rounded to the nearest integer (not truncated) and kept inside the dtype's range
    (a mean at the top of int64's range must not wrap to a negative counter); into a
    bool tensor, a value rounding to non-zero is True. A float value beyond a float
    tensor's range (a float64 step into a float32 tensor, an extrapolating rule such as
    FedNova or a server optimiser) saturates at the dtype's largest finite value.
    """
    array = np.asarray(value)
    dtype = reference.dtype
    if dtype.kind in "iu" and array.dtype.kind == "f":
        low, high = _integer_bounds(dtype)
        array = np.clip(np.rint(array), low, high)
    elif dtype.kind == "b" and array.dtype.kind != "b":
        array = np.rint(array) != 0
    elif dtype.kind == "f" and array.dtype.kind == "f":
        top = float(np.finfo(dtype).max)  # a step beyond the dtype's range saturates (see saturate)
        array = np.clip(array, -top, top)
    return np.array(array, dtype=dtype).reshape(reference.shape)
