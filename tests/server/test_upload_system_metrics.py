"""Issue 10, system metrics in deployment: what an agent reports with its upload is checked,
stored as scope "system" rows under the agent's name, and the aggregator records its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aggregator_helpers import INIT, config, join, payload, weights_of
from live_server import serving

from fedloom.client.agent import Agent
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult, to_bytes
from fedloom.core.system_metrics import SYSTEM_METRIC_NAMES
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.app import create_app


def system_payload(agent_id: str, round: int, system, value: float = 1.0) -> bytes:
    text = system if isinstance(system, str) else json.dumps(system)
    extra = {"metrics": json.dumps({"loss": value}), "system": text}
    return to_bytes(weights_of(value), round=round, client_id=agent_id, num_samples=10, extra=extra)


def system_rows(store, run_id):
    return {(m.round, m.client_id, m.name): m.value for m in store.metrics(run_id, scope="system")}


def test_reported_system_metrics_are_stored_under_the_agent_name(make_aggregator, store):
    agg = make_aggregator(min_agents=1)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    reported = {"seconds_train": 1.5, "bytes_up": 2.0**40, "cpu_percent": 0.0, "memory_rss_bytes": 123456789}
    agg.submit_update(agent, system_payload(agent.id, 1, reported))
    rows = system_rows(store, agg.run_id)
    assert {k: v for k, v in rows.items() if k[1] == "site-a"} == {
        (1, "site-a", name): float(value) for name, value in reported.items()
    }
    assert store.metrics(agg.run_id, scope="server")  # the update itself counted as before


HOSTILE = [
    ({"seconds_trian": 1.0}, "unknown"),
    ({"cpu_percent": float("nan")}, "'cpu_percent'"),
    ({"bytes_up": 1e300}, "'bytes_up'"),
    ({"seconds_wait": -1.0}, "'seconds_wait'"),
    ({"seconds_train": True}, "'seconds_train'"),
    ({"gpu_util_percent": 101}, "'gpu_util_percent'"),
    ({f"m{i}": 1.0 for i in range(11)}, "11 system metrics"),
    ('{"cpu_percent": Infinity}', "'cpu_percent'"),
    ("[1, 2]", "JSON object"),
    ('{"bytes_up": ' + "1" * 5000 + "}", "at most 4096"),
]


@pytest.mark.parametrize(("system", "named"), HOSTILE)
def test_hostile_system_fields_refuse_the_upload_with_a_recorded_reason(make_aggregator, store, system, named):
    agg = make_aggregator(min_agents=1)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(agent, system_payload(agent.id, 1, system))
    assert (info.value.status, info.value.code) == (400, "invalid_payload")
    assert "header field 'system'" in info.value.detail and named in info.value.detail
    rejection = store.list_rejections(agg.run_id)[-1]
    assert rejection.code == "invalid_payload" and "'system'" in rejection.reason and rejection.client_id == agent.id
    assert agg.status()["received"] == 0 and not system_rows(store, agg.run_id)
    agg.submit_update(agent, payload(agent.id, 1))  # nothing else changed: a clean upload closes the round
    assert agg.status()["rounds_completed"] == 1


def test_the_aggregator_records_bytes_and_its_process_per_ended_round(make_aggregator, store, clock):
    sampled = {"cpu_percent": 12.5, "memory_rss_bytes": 1e9}
    agg = Aggregator(config(min_agents=1), store, clock=clock, initial_weights=INIT, system_sampler=lambda: sampled)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    served, _ = agg.global_model_bytes(1, agent.id)
    agg.meter.served(len(served))  # what GET /v1/models/global does
    body = payload(agent.id, 1)
    agg.submit_update(agent, body)
    rows = {k[2]: v for k, v in system_rows(store, agg.run_id).items() if k[:2] == (1, "aggregator")}
    assert rows == {"bytes_up": len(served), "bytes_down": len(body), **sampled}
    assert not [k for k in system_rows(store, agg.run_id) if k[0] == 2]  # round 2 has not ended


class PlusOne:
    """A trainer whose local model is the global one plus one (float32 weights of the INIT shapes)."""

    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        return FitResult({k: (v + 1).astype(v.dtype) for k, v in weights.items()}, 10, {"loss": 0.5})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def test_a_real_agent_reports_its_rounds(store, tmp_path):
    agg = Aggregator(config(min_agents=1, max_rounds=2, linger_seconds=0.0), store, initial_weights=INIT)
    token = store.create_token("site-a")
    with serving(create_app(agg)) as url, AggregatorClient(url, timeout=10) as client:
        agent = Agent(client, PlusOne, tmp_path / "agent", "site-a", token, poll_wait=0.5, handle_signals=False)
        agent.run()
    rows = system_rows(store, agg.run_id)
    mine = {(r, n) for r, c, n in rows if c == "site-a"}
    for round in (1, 2):
        for name in ("seconds_wait", "seconds_download", "seconds_train", "bytes_down", "bytes_up", "cpu_percent"):
            assert (round, name) in mine
    assert (2, "seconds_upload") in mine and (1, "seconds_upload") not in mine  # the previous upload's time
    model_bytes = sum(np.asarray(v).nbytes for v in INIT.values())
    assert rows[(1, "site-a", "bytes_down")] == rows[(1, "site-a", "bytes_up")] == model_bytes
    assert rows[(1, "site-a", "memory_rss_bytes")] > 10e6
    assert {n for r, c, n in rows if c == "aggregator" and r == 1} >= {"bytes_up", "bytes_down"}
    assert rows[(1, "aggregator", "bytes_up")] >= model_bytes and set(n for _, _, n in rows) <= set(SYSTEM_METRIC_NAMES)
