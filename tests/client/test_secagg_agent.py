"""Issue 11, secure aggregation in deployment, the agent's side alone: the delta it masks
keeps each tensor's dtype and shape (integer counters exact), and an agent that meets a
round past its first stage without that round's secrets (a restart mid-round) sends
nothing for it and takes part again from the next round's first stage."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedloom.client.answers import TaskInfo
from fedloom.client.secagg_agent import SecAggParticipant, update_delta

pytest.importorskip("cryptography")


def test_the_delta_keeps_dtypes_and_counts_exactly():
    start = {
        "w": np.array([[1.0, -2.0]], np.float32),
        "scale": np.array(0.5, np.float64),
        "bn.num_batches_tracked": np.array(2**40, np.int64),
    }
    local = {
        "w": np.array([[1.25, -2.5]], np.float32),
        "scale": np.array(1e-300, np.float64),
        "bn.num_batches_tracked": np.array(2**40 + 3, np.int64),
    }
    delta = update_delta(local, start)
    assert {k: (v.dtype, v.shape) for k, v in delta.items()} == {k: (v.dtype, v.shape) for k, v in start.items()}
    np.testing.assert_array_equal(delta["w"], np.array([[0.25, -0.5]], np.float32))
    assert delta["scale"] == 1e-300 - 0.5
    assert int(delta["bn.num_batches_tracked"]) == 3


class Recorder:
    """An AggregatorClient stand-in that records what would be sent."""

    agent_id = "ag_me"

    def __init__(self):
        self.posts: list[str] = []

    def json_call(self, method, path, **kwargs):
        self.posts.append(f"{method} {path}")
        return {}

    def download_global(self, round):
        return {"w": np.zeros(2, np.float32)}, "f" * 64


def task(stage: str, round: int) -> TaskInfo:
    settings = {"clip_range": 1.0, "bits": 16, "threshold": 2, "neighbours": None}
    settings |= {"max_total_samples": 1000, "stochastic_rounding": False}
    info = {"stage": stage, "round": round, "selected": ["ag_me", "ag_b", "ag_c"], "graph_seed": 0}
    return TaskInfo("secagg", round, round, None, {}, None, {**info, "settings": settings})


def test_a_round_met_past_its_first_stage_is_sat_out(tmp_path, caplog):
    client = Recorder()
    participant = SecAggParticipant(client, tmp_path, None)  # type: ignore[arg-type]

    def call(fn, *args, **kwargs):
        return fn(*args, **kwargs)

    with caplog.at_level(logging.WARNING, logger="fedloom.agent"):
        participant.act(task("share", 4), trainer=None, call=call)  # restarted: no keys for round 4
        participant.act(task("collect", 4), trainer=None, call=call)
    assert client.posts == []
    assert "sits the round out" in caplog.text and "without the round's keys" in caplog.text
    participant.act(task("advertise", 5), trainer=None, call=call)  # the next round: from the start
    assert client.posts == ["POST /v1/secagg/advertise"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"settings": {"bits": 99}}, "bits"),
        ({"settings": {"bits": 16, "unknown": 1}}, "settings are unusable"),
        ({"selected": ["ag_b", "ag_c"]}, "not among the round's selected"),
        ({"graph_seed": "x"}, "settings are unusable"),
    ],
)
def test_a_hostile_secagg_task_is_sat_out_without_sending(tmp_path, caplog, change, words):
    client = Recorder()
    participant = SecAggParticipant(client, tmp_path, None)  # type: ignore[arg-type]
    hostile = task("advertise", 1)
    hostile = TaskInfo("secagg", 1, 1, None, {}, None, {**(hostile.secagg or {}), **change})
    with caplog.at_level(logging.WARNING, logger="fedloom.agent"):
        participant.act(hostile, trainer=None, call=lambda fn, *a, **k: fn(*a, **k))
    assert client.posts == [] and words in caplog.text
