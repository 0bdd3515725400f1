"""Client-reported metrics: the one check every receiver applies before storing or averaging them.

Metrics arrive from code fedloom does not control (a user's Trainer, a remote agent's
upload header). Their names become database rows and column values and their values
are averaged across clients, so a name that is long, holds NUL or control characters,
or a value that is NaN, infinite or astronomically large would fail (or poison) a
store write far from where it entered. Checking them where they enter keeps that
failure at the door, where it can be refused with a reason naming the metric.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from fedloom.core.errors import ValidationError

#: longest metric name accepted
MAX_METRIC_NAME = 64
#: most metrics one update may carry
MAX_METRICS = 64
#: largest magnitude of a metric value: far beyond any loss or count, far below float64 overflow
#: even after weighting by 2**63 samples
MAX_METRIC_MAGNITUDE = 1e15
#: longest ``metrics`` JSON text read at all (64 metrics of 64-character names fit many times over)
MAX_METRICS_JSON = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9_./-]+")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"metric name {name!r} must be a non-empty string")
    if len(name) > MAX_METRIC_NAME:
        raise ValidationError(
            f"metric name {name[:MAX_METRIC_NAME]!r}... is {len(name)} characters long; use at most {MAX_METRIC_NAME}"
        )
    if not _NAME.fullmatch(name):
        raise ValidationError(f"metric name {name!r} may only use letters, digits and '_', '.', '/', '-'")
    return name


def _check_value(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValidationError(f"metric {name!r} must be a finite number, got {value!r}")
    if abs(number) > MAX_METRIC_MAGNITUDE:
        raise ValidationError(f"metric {name!r} = {number!r} is beyond +-{MAX_METRIC_MAGNITUDE:g}")
    return number


def validate_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """``metrics`` as ``{name: float}``, or :class:`ValidationError` naming the first bad metric.

    Names: 1-64 characters of ``[A-Za-z0-9_./-]``; at most 64 metrics; values finite
    numbers (not bools) of magnitude at most 1e15.
    """
    if not isinstance(metrics, Mapping):
        raise ValidationError(f"metrics must be a mapping of name -> number, got {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS:
        raise ValidationError(f"{len(metrics)} metrics were reported; at most {MAX_METRICS} are accepted")
    return {_check_name(name): _check_value(str(name), value) for name, value in metrics.items()}


def json_object(text: str, what: str, max_chars: int) -> dict[str, object]:
    """``text`` parsed as one JSON object of at most ``max_chars`` characters, or a ValidationError
    saying which field (``what``: "metrics", "system metrics") was too long, malformed or nested."""
    if len(text) > max_chars:
        raise ValidationError(f"{what} JSON is {len(text)} characters long; at most {max_chars} are read")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValidationError(f"{what} are not a JSON object: {reason}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be a JSON object of name -> number")
    return data


def metrics_from_json(text: str) -> dict[str, float]:
    """Parse and validate a JSON object of metrics (the upload header's ``metrics`` field)."""
    return validate_metrics(json_object(text, "metrics", MAX_METRICS_JSON))


def usable_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The valid entries of ``metrics``, dropping the rest: for records written before validation."""
    kept: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            kept.update(validate_metrics({name: value}))
        except ValidationError:
            continue
    return kept


#: client metrics whose round value is the largest any client reported rather than the sample-weighted
#: mean: a privacy loss (``privacy/dp_sgd_epsilon``) is as bad as the worst client's, and a mean of
#: ε values is no ε of anything
WORST_CASE_PREFIX = "privacy/"


def add_client_metrics(sums: dict[str, float], metrics: Mapping[str, float], num_samples: int) -> None:
    """Fold one update's metrics into a round's running values: ``value · n`` sums, or the maximum
    for :data:`WORST_CASE_PREFIX` names (see :func:`round_client_metrics`)."""
    for key, value in metrics.items():
        if key.startswith(WORST_CASE_PREFIX):
            sums[key] = max(sums.get(key, -math.inf), float(value))
        else:
            sums[key] = sums.get(key, 0.0) + float(value) * num_samples


def round_client_metrics(sums: Mapping[str, float], total_samples: int) -> dict[str, float]:
    """The round's client metrics: sample-weighted means, and the worst case of ``privacy/`` ones."""
    return {k: v if k.startswith(WORST_CASE_PREFIX) else v / total_samples for k, v in sums.items()}
