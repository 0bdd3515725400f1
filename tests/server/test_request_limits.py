"""Item: unauthenticated bodies are size-limited, refusals are rate-limited, rejection rows are bounded."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from aggregator_helpers import join, payload
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.server.aggregator import RequestRefusedError
from fedloom.server.app import create_app
from fedloom.server.limits import RateLimiter, RejectionBudget

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def serve(make_aggregator):
    clients = []

    def start(**fields):
        agg = make_aggregator(**fields)
        client = TestClient(create_app(agg, background_tick=False), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, agg

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def register(client, store, name):
    token = store.create_token(name)
    answer = client.post("/v1/agents/register", json={"name": name, "join_token": token})
    assert answer.status_code == 200, answer.text
    return answer.json()["agent_id"], {"Authorization": f"Bearer {answer.json()['credential']}"}


def test_a_huge_registration_body_is_413_while_reading(serve, store):
    client, agg = serve()
    huge = b'{"name": "site-a", "join_token": "' + b"x" * (2 << 20) + b'"}'
    response = client.post("/v1/agents/register", content=huge, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")

    def chunks():  # no Content-Length: the limit must hold while reading
        yield b'{"name": "site-a", "join_token": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/v1/agents/register", content=chunks(), headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")
    assert store.list_agents(agg.run_id) == []
    # an ordinary registration still works, and bad JSON is still a 422 naming the field
    register(client, store, "site-a")
    bad = client.post("/v1/agents/register", json={"name": "bad name!", "join_token": "flj_x"})
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request") and "name" in bad.json()["detail"]
    assert client.post("/v1/agents/register", content=b"{not json").status_code == 422
    spec = client.get("/openapi.json").json()["paths"]["/v1/agents/register"]["post"]
    assert "application/json" in spec["requestBody"]["content"]


def test_refused_uploads_are_rate_limited_per_agent_and_rows_are_bounded(serve, store):
    client, agg = serve(min_agents=2, rate_limit_burst=30, rate_limit_per_second=0.01, max_rejections_per_round=5)
    bad_id, bad = register(client, store, "noisy")
    good_id, good = register(client, store, "good")
    answers = [client.post("/v1/updates", content=b"garbage" * 10, headers={**bad, **OCTET}) for _ in range(300)]
    codes = [(r.status_code, r.json()["error"]) for r in answers]
    assert codes[:30] == [(400, "invalid_payload")] * 30
    assert set(codes[30:]) == {(429, "rate_limited")}
    assert int(answers[-1].headers["Retry-After"]) >= 1
    rows = [r for r in store.list_rejections(agg.run_id) if r.client_id == bad_id]
    assert len(rows) == 6 and "not recorded" in rows[-1].reason
    # the limit is per agent: the other agent uploads normally, and its refusals have their own bucket
    assert client.post("/v1/updates", content=payload(good_id, 1), headers={**good, **OCTET}).status_code == 200
    assert client.post("/v1/updates", content=payload(good_id, 1), headers={**good, **OCTET}).status_code == 409
    assert client.get("/v1/status", headers=bad).status_code == 429  # the noisy agent waits for its bucket


def test_unauthenticated_refusals_are_rate_limited_per_address(serve, store):
    client, agg = serve(rate_limit_burst=10, rate_limit_per_second=0.01)
    codes = [client.get("/v1/status", headers={"Authorization": "Bearer fla_nope"}).status_code for _ in range(40)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    register_codes = [
        client.post("/v1/agents/register", json={"name": "x", "join_token": "flj_bad"}).status_code for _ in range(5)
    ]
    assert register_codes == [429] * 5  # the address has spent its bucket
    assert store.list_agents(agg.run_id) == [] and store.list_rejections(agg.run_id) == []


def test_registrations_spend_the_address_bucket(serve, store):
    client, _ = serve(rate_limit_burst=3, rate_limit_per_second=0.01)
    for name in ("a", "b", "c"):
        register(client, store, name)
    token = store.create_token("d")
    response = client.post("/v1/agents/register", json={"name": "d", "join_token": token})
    assert (response.status_code, response.json()["error"]) == (429, "rate_limited")


def test_engine_refusals_are_bounded_too(make_aggregator, store):
    agg = make_aggregator(min_agents=1, max_rejections_per_round=3)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    wrong = {"w": np.zeros((5,), np.float32), "b": np.zeros(3, np.float32)}
    for round_claimed in range(2, 12):  # wrong_round from the engine, each naming another round
        with pytest.raises(RequestRefusedError):
            agg.submit_update(agent, payload(agent.id, round_claimed))
    for _ in range(10):  # invalid_weights from the engine
        with pytest.raises(RequestRefusedError):
            agg.submit_update(agent, payload(agent.id, 1, weights=wrong))
    rows = store.list_rejections(agg.run_id)
    assert len(rows) == 4 and [r.code for r in rows] == ["wrong_round"] * 4
    assert "not recorded" in rows[-1].reason and agg.status()["received"] == 0


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.spend("k") for _ in range(4)] == [True, True, True, False]
    assert not limiter.allows("k") and limiter.retry_after("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.spend("k") and not limiter.spend("k")
    assert limiter.allows("other")
    now[0] += 100
    assert [limiter.spend("k") for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_rejection_budget_counts_per_agent_and_round():
    budget = RejectionBudget(2)
    got = [budget.admit("a", 1, "r") for _ in range(5)]
    assert got[:2] == ["r", "r"] and "not recorded" in (got[2] or "") and got[3:] == [None, None]
    assert budget.admit("a", 2, "r") == "r" and budget.admit("b", 1, "r") == "r"
    assert budget.unrecorded == 2


def test_a_refusal_quoting_a_huge_client_id_records_a_short_reason(make_aggregator, store):
    agg = make_aggregator(min_agents=1)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(agent, payload("x" * (1 << 20), 1))
    assert info.value.code == "client_id_mismatch" and len(info.value.detail) <= 1000
    (row,) = store.list_rejections(agg.run_id)
    assert row.code == "client_id_mismatch" and len(row.reason) <= 1000 and row.reason.startswith("the update")
