"""Item: header integers out of range are a 400 at parse time, never a 503 and a full state reload."""

from __future__ import annotations

import json
import warnings

import pytest
from aggregator_helpers import join, weights_of
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.core import SerializationError, from_bytes, to_bytes
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1


def body(agent_id, round, num_samples):
    extra = {"metrics": json.dumps({"loss": 0.5})}
    return to_bytes(weights_of(1.0), round=round, client_id=agent_id, num_samples=num_samples, extra=extra)


@pytest.mark.parametrize(
    ("round", "num_samples", "field"),
    [
        (2**31, 10, "round"),
        (2**40, 10, "round"),
        (-2, 10, "round"),
        (1, 2**63, "num_samples"),
        (1, 10**400, "num_samples"),
        (1, 0, "num_samples"),
        (1, -5, "num_samples"),
    ],
)
def test_out_of_range_header_integers_are_refused_before_the_database(
    make_aggregator, store, monkeypatch, round, num_samples, field
):
    agg = make_aggregator(min_agents=1)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    reloads = []
    monkeypatch.setattr(agg._driver, "load", lambda: reloads.append(1))
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(agent, body(agent.id, round, num_samples))
    assert (info.value.status, info.value.code) == (400, "invalid_payload")
    assert field in info.value.detail
    assert reloads == []  # no store write failed, so nothing was reloaded
    rejection = store.list_rejections(agg.run_id)[-1]
    assert rejection.code == "invalid_payload" and rejection.client_id == agent.id
    assert rejection.round is None or 0 <= rejection.round <= INT32_MAX
    assert store.list_local_models(agg.run_id) == []
    assert agg.status()["received"] == 0


def test_over_http_the_answer_is_400_and_the_next_upload_is_accepted(make_aggregator, store):
    agg: Aggregator = make_aggregator(min_agents=1)
    token = store.create_token("site-a")
    with TestClient(create_app(agg, background_tick=False), raise_server_exceptions=False) as client:
        answer = client.post("/v1/agents/register", json={"name": "site-a", "join_token": token}).json()
        headers = {"Authorization": f"Bearer {answer['credential']}", "Content-Type": "application/octet-stream"}
        for bad in (body(answer["agent_id"], 2**31, 10), body(answer["agent_id"], 1, 2**63)):
            response = client.post("/v1/updates", content=bad, headers=headers)
            assert (response.status_code, response.json()["error"]) == (400, "invalid_payload"), response.text
        assert client.get("/v1/status", headers=headers).status_code == 200
        good = client.post("/v1/updates", content=body(answer["agent_id"], 1, 10), headers=headers)
        assert good.status_code == 200, good.text  # (2**63 - 1 parses, but [rounds] max_num_samples caps it)
    assert store.list_local_models(agg.run_id)[0].num_samples == 10


def test_from_bytes_keeps_header_integers_in_their_ranges():
    weights = weights_of(1.0)
    assert from_bytes(to_bytes(weights, round=INT32_MAX, num_samples=INT64_MAX))[1].num_samples == INT64_MAX
    assert from_bytes(to_bytes(weights))[1].round == -1  # -1 / 0 mean "unknown"
    for fields in ({"round": 2**31}, {"round": -2}, {"num_samples": 2**63}, {"num_samples": -1}):
        with pytest.raises(SerializationError, match=next(iter(fields))):
            from_bytes(to_bytes(weights, **fields))
