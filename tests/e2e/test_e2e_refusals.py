"""Refused requests against a real aggregator: bad tokens and bad uploads (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from conftest import Cluster, bearer, digits_weights
from fedloom.core import to_bytes

#: 0.02 MiB: a digits model (~2.7 kB) fits, 64 kB of bytes do not
MAX_UPLOAD_MB = 0.02


def _register(cluster: Cluster, name: str, token: str) -> httpx.Response:
    return httpx.post(f"{cluster.url}/v1/agents/register", json={"name": name, "join_token": token}, timeout=10)


def _update(agent_id: str, round_no: int, weights: dict[str, np.ndarray] | None = None) -> bytes:
    return to_bytes(
        digits_weights() if weights is None else weights,
        round=round_no,
        client_id=agent_id,
        num_samples=10,
        extra={"metrics": json.dumps({"train_loss": 1.0})},
    )


def _post(cluster: Cluster, path: str, credential: str, body: bytes) -> httpx.Response:
    headers = {**bearer(credential), "Content-Type": "application/octet-stream"}
    return httpx.post(f"{cluster.url}{path}", content=body, headers=headers, timeout=10)


def _admin(cluster: Cluster) -> dict[str, Any]:
    """One registered admin agent whose initial model opened round 1."""
    token = cluster.tokens("site-0", admin="site-0")["site-0"]
    registered = _register(cluster, "site-0", token)
    assert registered.status_code == 200, registered.text
    agent: dict[str, Any] = registered.json()
    initial = _post(cluster, "/v1/models/initial", agent["credential"], to_bytes(digits_weights()))
    assert initial.status_code == 200, initial.text
    return agent


def test_bad_token_is_401_and_stores_nothing(cluster: Cluster) -> None:
    cluster.start_server()
    cluster.tokens("site-0")
    response = _register(cluster, "site-0", "flj_" + "A" * 43)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert cluster.query(lambda s, r: s.list_agents(r)) == []
    unauthenticated = httpx.get(f"{cluster.url}/v1/status", headers=bearer("fla_" + "B" * 43), timeout=10)
    assert unauthenticated.status_code == 401


def test_bad_uploads_are_refused_and_recorded(cluster: Cluster) -> None:
    cluster.start_server(max_rounds=3, min_agents=1, max_upload_mb=MAX_UPLOAD_MB)
    agent = _admin(cluster)
    agent_id, credential = agent["agent_id"], agent["credential"]

    wrong_shape = _post(cluster, "/v1/updates", credential, _update(agent_id, 1, digits_weights((10, 63))))
    assert wrong_shape.status_code == 422, wrong_shape.text
    assert wrong_shape.json()["error"] == "invalid_weights"

    poisoned = digits_weights()
    poisoned["weight"][3, 7] = np.nan
    nan = _post(cluster, "/v1/updates", credential, _update(agent_id, 1, poisoned))
    assert nan.status_code == 422, nan.text
    assert nan.json()["error"] == "invalid_weights"

    oversized = _post(cluster, "/v1/updates", credential, b"\0" * (64 * 1024))
    assert oversized.status_code == 413, oversized.text
    assert oversized.json()["error"] == "payload_too_large"

    rejections = cluster.query(lambda s, r: s.list_rejections(r))
    codes = [(x.code, x.client_id) for x in rejections]
    assert codes == [
        ("invalid_weights", agent_id),
        ("invalid_weights", agent_id),
        ("payload_too_large", agent_id),
    ], rejections
    assert "weight" in rejections[0].reason and "weight" in rejections[1].reason
    # nothing of it counted: no local model for round 1
    assert cluster.query(lambda s, r: s.list_local_models(r, round=1)) == []


def test_replayed_upload_for_an_old_round_is_409_and_recorded(cluster: Cluster) -> None:
    cluster.start_server(max_rounds=3, min_agents=1)
    agent = _admin(cluster)
    agent_id, credential = agent["agent_id"], agent["credential"]
    body = _update(agent_id, 1)
    accepted = _post(cluster, "/v1/updates", credential, body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"accepted": True, "round": 1}
    assert 1 in cluster.global_rounds()  # round 1 closed at once (threshold 1.0 of one agent)

    replay = _post(cluster, "/v1/updates", credential, body)
    assert replay.status_code == 409, replay.text
    assert replay.json()["error"] == "wrong_round"
    rejections = cluster.query(lambda s, r: s.list_rejections(r))
    assert [(x.code, x.client_id, x.round) for x in rejections] == [(replay.json()["error"], agent_id, 1)]
    assert len(cluster.query(lambda s, r: s.list_local_models(r, round=1))) == 1
