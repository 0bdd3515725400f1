"""The one check of what a Trainer's ``fit`` returned, for simulation, worker processes and agents.

A user's Trainer may return anything; before its result becomes an update it must be
a :class:`FitResult` with well-formed, finite weights, a sample count that is an integer
of at least 1, and metrics that pass :func:`fedloom.core.metrics.validate_metrics` (short
names, finite values). Anything else is a :class:`ClientError` naming the round and the
field, the same in ``fedloom sim`` and ``fedloom agent``: a NaN loss fails the client's
round in both, instead of failing it in one and being dropped silently in the other.
"""

from __future__ import annotations

from typing import Any

from fedloom.core.errors import ClientError, ValidationError
from fedloom.core.fit import FitResult
from fedloom.core.metrics import validate_metrics
from fedloom.core.weights import check_finite, check_structure


def checked_fit_result(result: Any, round: int) -> FitResult:
    """``result`` as a clean FitResult (plain dicts, float metrics), or a ClientError saying what is wrong."""
    where = f"round {round}: trainer.fit"
    if not isinstance(result, FitResult):
        raise ClientError(f"{where} must return a FitResult, got {type(result).__name__}")
    try:
        check_structure(result.weights)
        check_finite(result.weights)
    except ValidationError as exc:
        raise ClientError(f"{where} returned unusable weights: {exc}") from None
    num_samples = result.num_samples
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ClientError(f"{where} returned num_samples={num_samples!r}; it must be an int >= 1")
    try:
        metrics = validate_metrics(dict(result.metrics or {}))
    except (ValidationError, TypeError, ValueError) as exc:
        raise ClientError(f"{where} returned unusable metrics: {exc}") from None
    return FitResult(dict(result.weights), num_samples, metrics)
