"""Tracking sinks: a run's rounds, read back from the store, in TensorBoard, MLflow and W&B.

A wiring layer like ``sim`` and ``cli``: it reads the store and feeds tools; the
lifecycle only ever sees a :class:`~fedloom.core.observe.RoundObserver`.
"""

from fedloom.tracking.feed import TrackingFeed
from fedloom.tracking.report import MAX_CLIENT_SERIES, RoundReport, read_round_report
from fedloom.tracking.settings import (
    TRACKING_KEYS,
    TrackingSettings,
    build_sinks,
    parse_track_flag,
    settings_from_mapping,
)
from fedloom.tracking.sink import SINK_NAMES, TrackingSink

__all__ = [
    "MAX_CLIENT_SERIES",
    "SINK_NAMES",
    "TRACKING_KEYS",
    "RoundReport",
    "TrackingFeed",
    "TrackingSettings",
    "TrackingSink",
    "build_sinks",
    "parse_track_flag",
    "read_round_report",
    "settings_from_mapping",
]
