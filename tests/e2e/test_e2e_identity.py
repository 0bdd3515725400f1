"""Identities against a real aggregator process: name takeover, Sybil tokens, revocation, sample counts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx

from conftest import Cluster, bearer, digits_weights, wait_until
from fedloom.core import to_bytes

DEADLINE = 600.0  # far longer than the test: a round that closes did not wait for its deadline


def _register(cluster: Cluster, name: str, token: str, **extra: Any) -> httpx.Response:
    body = {"name": name, "join_token": token, **extra}
    return httpx.post(f"{cluster.url}/v1/agents/register", json=body, timeout=10)


def _upload(cluster: Cluster, agent: dict[str, Any], round_no: int, num_samples: int = 10) -> httpx.Response:
    body = to_bytes(
        digits_weights(),
        round=round_no,
        client_id=agent["agent_id"],
        num_samples=num_samples,
        extra={"metrics": json.dumps({"train_loss": 1.0})},
    )
    headers = {**bearer(agent["credential"]), "Content-Type": "application/octet-stream"}
    return httpx.post(f"{cluster.url}/v1/updates", content=body, headers=headers, timeout=10)


def _two_agents(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    tokens = cluster.tokens("site-0", "site-1", admin="site-0")
    admin, other = (_register(cluster, name, tokens[name]) for name in ("site-0", "site-1"))
    assert admin.status_code == 200 and other.status_code == 200, (admin.text, other.text)
    first = admin.json()
    initial = httpx.post(
        f"{cluster.url}/v1/models/initial",
        content=to_bytes(digits_weights()),
        headers={**bearer(first["credential"]), "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert initial.status_code == 200, initial.text
    return first, other.json(), tokens


def test_revoking_a_token_from_another_process_ends_the_wait_for_its_agent(cluster: Cluster) -> None:
    cluster.start_server(max_rounds=3, min_agents=2, threshold=1.0, deadline_seconds=DEADLINE)
    kept, revoked, _ = _two_agents(cluster)
    assert _upload(cluster, kept, 1).status_code == 200
    assert cluster.status(kept["credential"])["rounds_completed"] == 0  # waits for site-1
    command = [sys.executable, "-m", "fedloom.cli.main", "token", "revoke", "--name", "site-1"]
    argv = [*command, "--home", str(cluster.home)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status = wait_until(
        lambda: (s := cluster.status(kept["credential"]))["rounds_completed"] == 1 and s,
        timeout=20,
        what="round 1 to close without the revoked agent",
    )
    assert status["agents"] == 1
    assert (status["state"], status["selected"]) == ("waiting_for_agents", [])  # min_agents = 2
    assert _upload(cluster, revoked, 1).status_code == 401


def test_name_takeover_sybils_and_inflated_counts_are_refused(cluster: Cluster) -> None:
    cluster.start_server(max_rounds=3, min_agents=2, deadline_seconds=DEADLINE, max_num_samples=1000)
    kept, other, tokens = _two_agents(cluster)
    takeover = _register(cluster, "site-1", tokens["site-0"])
    assert (takeover.status_code, takeover.json()["error"]) == (409, "name_taken")
    sybil = _register(cluster, "site-0-bis", tokens["site-0"])
    assert (sybil.status_code, sybil.json()["error"]) == (403, "agent_limit")
    inflated = _upload(cluster, other, 1, num_samples=2**62)
    assert (inflated.status_code, inflated.json()["error"]) == (422, "bad_num_samples")
    assert cluster.status(other["credential"])["agents"] == 2  # site-1 still works, as itself
    rejections = cluster.query(lambda s, r: [(x.code, x.client_id) for x in s.list_rejections(r)])
    assert rejections == [
        ("name_taken", "site-1"),
        ("agent_limit", "site-0-bis"),
        ("bad_num_samples", other["agent_id"]),
    ]
    assert _upload(cluster, kept, 1).status_code == 200
