"""The dashboard mounted in the aggregator's app, as ``fedloom server`` builds it (``--no-dashboard`` too)."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.cli.server import _app, _Stopper
from fedloom.server.aggregator import Aggregator
from fedloom.server.config import AggregatorConfig
from fedloom.store import SqlStore

with warnings.catch_warnings():
    # Starlette 1.x would rather run its TestClient on the httpx2 fork; httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

INITIAL = {"w": np.zeros((2, 2), dtype=np.float32), "bn.num_batches_tracked": np.array(0, dtype=np.int64)}


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[tuple[Aggregator, SqlStore]]:
    with SqlStore.open_default(tmp_path / "home") as store:
        config = AggregatorConfig().replace(max_rounds=3, check_interval_seconds=0.05)
        built = Aggregator(config, store, initial_weights=INITIAL)
        try:
            yield built, store
        finally:
            built.close()


def app_client(aggregator: Aggregator, store: SqlStore, no_dashboard: bool) -> TestClient:
    args = argparse.Namespace(no_dashboard=no_dashboard, keep_serving=True)
    return TestClient(_app(args, aggregator, store, _Stopper(aggregator.wake_waiters)))


def test_server_serves_the_dashboard_to_admin_tokens_only(aggregator: tuple[Aggregator, SqlStore]) -> None:
    agg, store = aggregator
    admin = store.create_token("ops", role="admin")
    agent_token = store.create_token("site", role="agent")
    with app_client(agg, store, no_dashboard=False) as client:
        registered = client.post("/v1/agents/register", json={"name": "site", "join_token": agent_token})
        assert registered.status_code == 200  # the agents' API is unchanged next to the dashboard
        credential = registered.json()["credential"]
        assert client.get("/dashboard/").status_code == 200
        runs = "/dashboard/api/runs"
        assert client.get(runs).status_code == 401
        assert client.get(runs, headers={"Authorization": f"Bearer {agent_token}"}).status_code == 403
        # an agent's credential is not a join token at all: unknown to the dashboard
        assert client.get(runs, headers={"Authorization": f"Bearer {credential}"}).status_code == 401
        answer = client.get(runs, headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200
        [run] = answer.json()["runs"]
        assert run["kind"] == "deployment" and run["rounds_planned"] == 3
        agents = client.get(f"/dashboard/api/agents?run={run['id']}", headers={"Authorization": f"Bearer {admin}"})
        assert [a["name"] for a in agents.json()["agents"]] == ["site"]
        # the aggregator's OpenAPI document stays the agents' protocol (docs/protocol.md) only
        paths = client.get("/openapi.json").json()["paths"]
        assert paths and all(path.startswith("/v1/") for path in paths)


def test_no_dashboard_serves_none(aggregator: tuple[Aggregator, SqlStore]) -> None:
    agg, store = aggregator
    admin = store.create_token("ops", role="admin")
    with app_client(agg, store, no_dashboard=True) as client:
        assert client.get("/dashboard/").status_code == 404
        assert client.get("/dashboard/api/runs", headers={"Authorization": f"Bearer {admin}"}).status_code == 404
        assert client.get("/v1/health").status_code == 200
