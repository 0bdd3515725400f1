"""System metrics: the fixed set of names a party may report about its own resource use.

Agents send these with their uploads, so their names and values cross a trust
boundary: a fixed vocabulary (rather than free-form names) keeps what readers (the
tracking sinks, the dashboard) can rely on, and lets the aggregator refuse anything
else with a reason naming the field. They are stored as ordinary ``metrics`` rows of
scope ``"system"``; core only defines and checks them (measuring needs psutil, which
lives in :mod:`fedloom.client.system_sampler`).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping

from fedloom.core.errors import ValidationError
from fedloom.core.metrics import json_object

#: scope of the ``metrics`` rows holding system metrics
SYSTEM_SCOPE = "system"
#: ``client_id`` of the aggregator's own rows (deployment)
AGGREGATOR_ID = "aggregator"
#: ``client_id`` of the simulating process's own rows
SIMULATION_ID = "simulation"

_TB = 2.0**40
_DAY = 86_400.0
#: every accepted name, with the largest value it may take (beyond it a report is broken or hostile)
SYSTEM_METRIC_LIMITS: Mapping[str, float] = {
    "cpu_percent": 100.0 * 4096,  # psutil counts every core: 100 % per core
    "memory_rss_bytes": 64 * _TB,
    "bytes_up": 64 * _TB,
    "bytes_down": 64 * _TB,
    "seconds_train": 30 * _DAY,
    "seconds_upload": 30 * _DAY,
    "seconds_download": 30 * _DAY,
    "seconds_wait": 30 * _DAY,
    "gpu_util_percent": 100.0,
    "gpu_memory_bytes": 64 * _TB,
}
SYSTEM_METRIC_NAMES = tuple(SYSTEM_METRIC_LIMITS)
#: longest ``system`` JSON text read at all (the ten names with long numbers fit many times)
MAX_SYSTEM_JSON = 4096


def validate_system_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """``metrics`` as ``{name: float}``, or :class:`ValidationError` naming the first bad entry.

    Names must be among :data:`SYSTEM_METRIC_NAMES` (each at most once, so at most ten
    entries); values finite numbers (not bools) in ``[0, limit]``.
    """
    if not isinstance(metrics, Mapping):
        raise ValidationError(f"system metrics must be a mapping of name -> number, got {type(metrics).__name__}")
    if len(metrics) > len(SYSTEM_METRIC_LIMITS):
        detail = f"{len(metrics)} system metrics were reported; at most {len(SYSTEM_METRIC_LIMITS)} exist"
        raise ValidationError(detail)
    return {_check_name(name): _check_value(name, value) for name, value in metrics.items()}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in SYSTEM_METRIC_LIMITS:
        shown = repr(name)[:70]
        raise ValidationError(f"system metric {shown} is unknown; known names: {', '.join(SYSTEM_METRIC_NAMES)}")
    return name


def _check_value(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # NumPy scalars too, never bools
        raise ValidationError(f"system metric {name!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    limit = SYSTEM_METRIC_LIMITS[name]
    if not math.isfinite(number) or not 0.0 <= number <= limit:
        raise ValidationError(f"system metric {name!r} = {number!r} must be a finite number in [0, {limit:g}]")
    return number


def system_metrics_from_json(text: str) -> dict[str, float]:
    """Parse and validate a JSON object of system metrics (the upload header's ``system`` field)."""
    return validate_system_metrics(json_object(text, "system metrics", MAX_SYSTEM_JSON))


def system_metrics_json(metrics: Mapping[str, float]) -> str:
    """The ``system`` header field for ``metrics`` (checked first, so an agent never sends a bad one)."""
    return json.dumps(validate_system_metrics(metrics), allow_nan=False, sort_keys=True)
