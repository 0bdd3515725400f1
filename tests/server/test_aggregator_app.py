"""The HTTP API of docs/protocol.md, through FastAPI's TestClient (no network)."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from aggregator_helpers import INIT, payload, weights_of
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.core import content_hash, from_bytes, to_bytes
from fedloom.server.app import SHA256_HEADER, create_app

with warnings.catch_warnings():
    # Starlette 1.x would rather run its TestClient on the httpx2 fork; httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def serve(make_aggregator):
    """``serve(**config_fields)`` -> (TestClient, aggregator); the client is closed after the test."""
    clients = []

    def start(initial=INIT, background_tick=False, **fields):
        aggregator = make_aggregator(initial=initial, **fields)
        client = TestClient(create_app(aggregator, background_tick=background_tick))
        client.__enter__()
        clients.append(client)
        return client, aggregator

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def register(client, store, name, role="agent"):
    token = store.create_token(name, role=role)
    response = client.post("/v1/agents/register", json={"name": name, "join_token": token})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer, {"Authorization": f"Bearer {answer['credential']}"}


def post_update(client, headers, body):
    return client.post("/v1/updates", content=body, headers={**headers, **OCTET})


def error_of(response):
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    return response.status_code, body["error"]


# --------------------------------------------------------------------- open endpoints


def test_health_and_openapi_need_no_credential(serve):
    client, _ = serve()
    assert client.get("/v1/health").json() == {"ok": True}
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/agents/register",
        "/v1/task",
        "/v1/models/global/{round}",
        "/v1/models/initial",
        "/v1/updates",
        "/v1/status",
        "/v1/health",
    } <= paths
    upload_body = spec["paths"]["/v1/updates"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in upload_body
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_register_with_good_and_bad_tokens(serve, store):
    client, agg = serve()
    answer, _ = register(client, store, "site-a")
    assert answer["agent_id"].startswith("ag_") and answer["credential"].startswith("fla_")
    assert answer["role"] == "agent" and answer["run_id"] == agg.run_id
    again, _ = register_again(client, store, "site-a")
    assert again["agent_id"] == answer["agent_id"] and again["credential"] != answer["credential"]
    # the replaced credential no longer works
    old = {"Authorization": f"Bearer {answer['credential']}"}
    assert error_of(client.get("/v1/task", headers=old)) == (401, "unauthorized")
    agents_before = store.list_agents(agg.run_id)
    for token in ("flj_" + "x" * 43, "not-a-token", ""):
        response = client.post("/v1/agents/register", json={"name": "site-b", "join_token": token})
        assert response.status_code in (401, 422)
        assert response.json()["error"] in ("unauthorized", "invalid_request")
    assert store.list_agents(agg.run_id) == agents_before
    response = client.post("/v1/agents/register", json={"name": "bad name!", "join_token": "flj_x"})
    assert error_of(response) == (422, "invalid_request") and "name" in response.json()["detail"]


def register_again(client, store, name):
    store.revoke_token(name)
    return register(client, store, name)


def test_revoked_token_locks_its_agents_out(serve, store):
    client, _ = serve()
    _, headers = register(client, store, "site-a")
    assert client.get("/v1/status", headers=headers).status_code == 200
    store.revoke_token("site-a")
    assert error_of(client.get("/v1/status", headers=headers)) == (401, "unauthorized")


@pytest.mark.parametrize("credential", [None, "Bearer fla_" + "x" * 43, "Bearer ", "Basic dXNlcjpwYXNz", "fla_abc"])
def test_every_other_endpoint_needs_a_credential(serve, store, credential):
    client, agg = serve(initial=None)
    answer, good = register(client, store, "admin", role="admin")
    headers = {} if credential is None else {"Authorization": credential}
    before = (agg.status(), store.list_rejections(agg.run_id), store.list_global_models(agg.run_id))
    body = to_bytes(INIT, client_id=answer["agent_id"])
    calls = [
        ("POST", "/v1/updates", body),
        ("POST", "/v1/models/initial", body),
        ("GET", "/v1/task", None),
        ("GET", "/v1/task?wait=1", None),
        ("GET", "/v1/models/global/latest", None),
        ("GET", "/v1/models/global/1", None),
        ("GET", "/v1/status", None),
    ]
    for method, path, content in calls:
        response = client.request(method, path, content=content, headers={**headers, **OCTET})
        assert error_of(response) == (401, "unauthorized"), path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (agg.status(), store.list_rejections(agg.run_id), store.list_global_models(agg.run_id)) == before
    assert client.get("/v1/status", headers=good).status_code == 200


# --------------------------------------------------------------------- a full round over HTTP


def test_full_sync_round_over_http(serve, store):
    client, agg = serve(min_agents=3, max_rounds=2)
    sites = [register(client, store, f"site-{i}") for i in range(3)]
    samples = [10, 20, 70]
    for round_no in (1, 2):
        for i, (answer, headers) in enumerate(sites):
            task = client.get("/v1/task", headers=headers).json()
            assert task["state"] == "train" and task["round"] == round_no and task["global_round"] == round_no
            assert task["config"]["round"] == round_no and task["config"]["batch_size"] == 32
            assert task["deadline"].endswith("Z")
            download = client.get(f"/v1/models/global/{task['global_round']}", headers=headers)
            assert download.status_code == 200 and download.headers["content-type"] == "application/octet-stream"
            weights, header = from_bytes(download.content)
            assert download.headers[SHA256_HEADER] == header.sha256 == task["global_sha256"] == content_hash(weights)
            trained = {k: v + float(i + 1) for k, v in weights.items()}
            body = payload(answer["agent_id"], round_no, weights=trained, n=samples[i], metrics={"loss": float(i)})
            response = post_update(client, headers, body)
            assert response.status_code == 200 and response.json() == {"accepted": True, "round": round_no}
            if i < 2:
                assert client.get("/v1/task", headers=headers).json()["state"] == "wait"
    # each round adds the sample-weighted mean of (i + 1) to the model
    shift = sum(n * (i + 1) for i, n in enumerate(samples)) / sum(samples)
    final, _ = from_bytes(client.get("/v1/models/global/latest", headers=sites[0][1]).content)
    np.testing.assert_allclose(final["w"], 2 * shift, rtol=1e-6)
    status = client.get("/v1/status", headers=sites[0][1]).json()
    assert status == {  # after the finish the status names the last round, not max_rounds + 1
        "run_id": agg.run_id,
        "round": 2,
        "state": "finished",
        "mode": "sync",
        "agents": 3,
        "selected": [],
        "received": 0,
        "rounds_completed": 2,
        "max_rounds": 2,
        "secagg_stage": None,  # no [secagg] in this run
    }
    assert client.get("/v1/task", headers=sites[0][1]).json()["state"] == "finished"
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 1, 2]


def test_status_while_collecting(serve, store):
    client, _ = serve(min_agents=2)
    (a, ha), (b, _) = register(client, store, "a"), register(client, store, "b")
    post_update(client, ha, payload(a["agent_id"], 1))
    status = client.get("/v1/status", headers=ha).json()
    assert status["state"] == "collecting" and status["round"] == 1 and status["received"] == 1
    assert sorted(status["selected"]) == sorted([a["agent_id"], b["agent_id"]]) and status["agents"] == 2


# --------------------------------------------------------------------- refusals over HTTP


@pytest.mark.parametrize(
    ("make_body", "status", "code"),
    [
        (
            lambda aid: payload(aid, 1, weights={"w": np.zeros((3, 2), np.float32), "b": INIT["b"]}),
            422,
            "invalid_weights",
        ),
        (
            lambda aid: payload(aid, 1, weights={**INIT, "b": np.array([np.nan, 0, np.inf], np.float32)}),
            422,
            "invalid_weights",
        ),
        (lambda aid: b"garbage" * 20, 400, "invalid_payload"),
        (lambda aid: b"", 400, "invalid_payload"),
        (lambda aid: payload("ag_other", 1), 403, "client_id_mismatch"),
        (lambda aid: payload(aid, 0), 409, "wrong_round"),
        (lambda aid: payload(aid, 1) + b"x" * 2000, 413, "payload_too_large"),
    ],
)
def test_refused_uploads_over_http(serve, store, make_body, status, code):
    client, agg = serve(min_agents=2, max_upload_mb=0.001)  # 1048 bytes
    (a, ha), _ = register(client, store, "a"), register(client, store, "b")
    before = agg.status()
    response = post_update(client, ha, make_body(a["agent_id"]))
    assert error_of(response) == (status, code)
    if code == "invalid_weights":
        assert "'w'" in response.json()["detail"] or "'b'" in response.json()["detail"]
    assert agg.status() == before
    assert store.list_rejections(agg.run_id)[-1].code == code


def test_oversized_streamed_body_is_refused_while_reading(serve, store):
    client, agg = serve(min_agents=1, max_upload_mb=0.001)
    _, headers = register(client, store, "a")

    def chunks():  # no Content-Length: the limit must be enforced while reading
        for _ in range(100):
            yield b"x" * 500

    response = client.post("/v1/updates", content=chunks(), headers={**headers, **OCTET})
    assert error_of(response) == (413, "payload_too_large")
    assert store.list_rejections(agg.run_id)[-1].code == "payload_too_large"
    assert agg.status()["received"] == 0


def test_replay_and_duplicate_over_http(serve, store):
    client, _ = serve(min_agents=1)
    answer, headers = register(client, store, "a")
    body = payload(answer["agent_id"], 1)
    assert post_update(client, headers, body).status_code == 200
    assert error_of(post_update(client, headers, body)) == (409, "wrong_round")  # round 2 is open now
    second = payload(answer["agent_id"], 2)
    assert post_update(client, headers, second).status_code == 200
    assert error_of(post_update(client, headers, second)) == (409, "wrong_round")


def test_global_model_errors(serve, store):
    client, _ = serve(initial=None)
    _, headers = register(client, store, "a")
    assert error_of(client.get("/v1/models/global/latest", headers=headers)) == (404, "not_found")
    assert error_of(client.get("/v1/models/global/1", headers=headers)) == (404, "not_found")
    assert error_of(client.get("/v1/models/global/abc", headers=headers)) == (404, "not_found")
    assert error_of(client.get("/v1/nowhere", headers=headers)) == (404, "not_found")
    assert error_of(client.get("/v1/task?wait=61", headers=headers)) == (422, "invalid_request")
    assert error_of(client.get("/v1/task?wait=-1", headers=headers)) == (422, "invalid_request")


def test_initial_model_upload_over_http(serve, store):
    client, agg = serve(initial=None)
    admin, admin_headers = register(client, store, "admin", role="admin")
    _, worker_headers = register(client, store, "worker")
    assert admin["role"] == "admin"
    assert client.get("/v1/task", headers=worker_headers).json()["state"] == "wait"
    assert client.get("/v1/status", headers=worker_headers).json()["state"] == "waiting_for_model"
    body = to_bytes(weights_of(0.25), client_id=admin["agent_id"])
    response = client.post("/v1/models/initial", content=body, headers={**worker_headers, **OCTET})
    assert error_of(response) == (403, "forbidden")
    bad = to_bytes({"w": np.array([np.nan], np.float32)}, client_id=admin["agent_id"])
    response = client.post("/v1/models/initial", content=bad, headers={**admin_headers, **OCTET})
    assert error_of(response) == (422, "invalid_weights")
    response = client.post("/v1/models/initial", content=body, headers={**admin_headers, **OCTET})
    assert response.status_code == 200 and response.json()["sha256"] == content_hash(weights_of(0.25))
    response = client.post("/v1/models/initial", content=body, headers={**admin_headers, **OCTET})
    assert error_of(response) == (409, "model_exists")
    task = client.get("/v1/task", headers=worker_headers).json()
    assert task["state"] == "train" and task["global_sha256"] == content_hash(weights_of(0.25))
    assert [r.code for r in store.list_rejections(agg.run_id)] == ["forbidden", "invalid_weights", "model_exists"]


# --------------------------------------------------------------------- long-poll and the background tick


def test_long_poll_returns_promptly_when_a_round_opens(serve, store):
    client, _ = serve(min_agents=2)
    _, headers = register(client, store, "a")
    assert client.get("/v1/task", headers=headers).json()["state"] == "wait"
    timer = threading.Timer(0.3, lambda: register(client, store, "b"))
    timer.start()
    started = time.monotonic()
    task = client.get("/v1/task?wait=20", headers=headers).json()
    waited = time.monotonic() - started
    timer.join()
    assert task["state"] == "train" and task["round"] == 1
    assert 0.2 < waited < 5


def test_long_poll_answers_after_wait_seconds_without_a_change(serve, store):
    client, _ = serve(min_agents=2)
    _, headers = register(client, store, "a")
    started = time.monotonic()
    assert client.get("/v1/task?wait=0.4", headers=headers).json()["state"] == "wait"
    assert 0.35 < time.monotonic() - started < 3


def test_background_tick_applies_deadlines(serve, store):
    client, agg = serve(
        min_agents=2, deadline_seconds=0.3, check_interval_seconds=0.05, background_tick=True, the_clock=time.time
    )
    (a, ha), _ = register(client, store, "a"), register(client, store, "b")
    assert post_update(client, ha, payload(a["agent_id"], 1)).status_code == 200
    task = client.get("/v1/task?wait=10", headers=ha).json()  # changes when the deadline closes round 1
    assert task["round"] == 2 and task["state"] == "train"
    assert store.list_rounds(agg.run_id)[0].num_updates == 1
