"""fedloom.core.metrics: what a reported metric may be, checked where it enters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedloom.core.errors import ValidationError
from fedloom.core.metrics import MAX_METRIC_NAME, MAX_METRICS, metrics_from_json, usable_metrics, validate_metrics


def test_ordinary_metrics_pass_as_floats():
    got = validate_metrics({"loss": 0.25, "local_steps": 12, "eval/accuracy": np.float64(0.5), "x-1.y_2": -3})
    assert got == {"loss": 0.25, "local_steps": 12.0, "eval/accuracy": 0.5, "x-1.y_2": -3.0}
    assert all(type(v) is float for v in got.values())
    assert validate_metrics({"tiny": 5e-324, "big": 1e15})["tiny"] == 5e-324


@pytest.mark.parametrize(
    ("metrics", "names"),
    [
        ({"l" * (MAX_METRIC_NAME + 1): 1.0}, "65 characters"),
        ({"x" * 201: 1.0}, "201 characters"),
        ({"lo\x00ss": 1.0}, "lo\\x00ss"),
        ({"": 1.0}, "non-empty"),
        ({"has space": 1.0}, "has space"),
        ({"ünï": 1.0}, "ünï"),
        ({"loss": math.nan}, "'loss'"),
        ({"loss": math.inf}, "'loss'"),
        ({"loss": 1e16}, "'loss'"),
        ({"loss": -(10**400)}, "'loss'"),
        ({"loss": True}, "'loss'"),
        ({"loss": "0.5"}, "'loss'"),
        ({f"m{i}": 1.0 for i in range(MAX_METRICS + 1)}, "65 metrics"),
    ],
)
def test_bad_metrics_are_refused_naming_the_metric(metrics, names):
    with pytest.raises(ValidationError, match="metric") as info:
        validate_metrics(metrics)
    assert names in str(info.value)


def test_metrics_json_refuses_garbage_deep_nesting_and_non_objects():
    assert metrics_from_json(json.dumps({"loss": 1.5})) == {"loss": 1.5}
    for text in ("[1, 2]", "not json", "[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000):
        with pytest.raises(ValidationError, match="metrics"):
            metrics_from_json(text)
    with pytest.raises(ValidationError, match="at most"):
        metrics_from_json(json.dumps({"a": 1.0, "pad": "x" * 70_000}))
    with pytest.raises(ValidationError, match="'loss'"):
        metrics_from_json('{"loss": 1e400}')


def test_usable_metrics_drops_only_the_bad_entries():
    assert usable_metrics({"loss": 1.0, "x" * 300: 2.0, "n\x00": 3.0, "acc": math.nan}) == {"loss": 1.0}
