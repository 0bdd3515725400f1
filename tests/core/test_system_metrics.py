"""The fixed vocabulary of system metrics and its checks (they arrive from remote agents)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedloom.core.errors import ValidationError
from fedloom.core.system_metrics import (
    SYSTEM_METRIC_LIMITS,
    SYSTEM_METRIC_NAMES,
    system_metrics_from_json,
    system_metrics_json,
    validate_system_metrics,
)


def test_the_contracts_names_and_nothing_else():
    assert set(SYSTEM_METRIC_NAMES) == {
        "cpu_percent",
        "memory_rss_bytes",
        "bytes_up",
        "bytes_down",
        "seconds_train",
        "seconds_upload",
        "seconds_download",
        "seconds_wait",
        "gpu_util_percent",
        "gpu_memory_bytes",
    }


def test_numbers_of_every_kind_within_limits_become_floats():
    values = {"bytes_up": np.int64(2**40), "cpu_percent": np.float32(250.0), "seconds_train": 0, "seconds_wait": 1e-300}
    assert validate_system_metrics(values) == {
        "bytes_up": 2.0**40,
        "cpu_percent": 250.0,
        "seconds_train": 0.0,
        "seconds_wait": 1e-300,
    }
    limits = dict(SYSTEM_METRIC_LIMITS)
    assert validate_system_metrics(limits) == limits  # each limit itself is accepted


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        ({"accuracy": 1.0}, "'accuracy' is unknown"),
        ({1: 1.0}, "1 is unknown"),
        ({"x" * 10_000: 1.0}, "unknown"),
        ({"bytes_down": -0.5}, "'bytes_down'"),
        ({"bytes_down": float("inf")}, "'bytes_down'"),
        ({"memory_rss_bytes": 10**400}, "'memory_rss_bytes'"),
        ({"seconds_train": "1"}, "must be a number"),
        ({"seconds_train": False}, "must be a number"),
        ({"seconds_train": np.bool_(True)}, "must be a number"),
        ({"gpu_util_percent": 100.0001}, "[0, 100]"),
    ],
)
def test_bad_entries_are_refused_naming_them(metrics, named):
    with pytest.raises(ValidationError, match="system metric") as info:
        validate_system_metrics(metrics)
    assert named in str(info.value) and len(str(info.value)) < 400


def test_json_round_trip_and_refusals():
    text = system_metrics_json({"cpu_percent": 3.5, "bytes_up": 10})
    assert json.loads(text) == {"bytes_up": 10.0, "cpu_percent": 3.5}
    assert system_metrics_from_json(text) == {"bytes_up": 10.0, "cpu_percent": 3.5}
    with pytest.raises(ValidationError, match="nested too deeply"):
        system_metrics_from_json("[" * 2000 + "]" * 2000)
    with pytest.raises(ValidationError, match="not a JSON object"):
        system_metrics_from_json("{")
    with pytest.raises(ValidationError, match="'cpu_percent'"):
        system_metrics_json({"cpu_percent": float("nan")})  # an agent never sends a bad one
