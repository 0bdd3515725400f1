"""Secrets and failures at the aggregator: no password in the record, nothing internal sent to
agents, a health check that sees the database, and a failed start recorded as failed."""

from __future__ import annotations

import logging
import sqlite3
import warnings
from pathlib import Path

import pytest
from aggregator_helpers import INIT, config
from sqlalchemy import create_engine
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.core.errors import StoreError
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app
from fedloom.store import SqlStore
from fedloom.store.sql import sqlite_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PASSWORD = "hunter2-Secret"
PG_URL = f"postgresql+psycopg://fedloom:{PASSWORD}@db.internal:5432/fedloom"


def test_the_db_url_password_is_not_stored_with_the_run(tmp_path, clock):
    with SqlStore.open_default(tmp_path / "home") as store:
        agg = Aggregator(config(db_url=PG_URL), store, clock=clock, initial_weights=INIT)
        stored = store.get_run(agg.run_id).config["server"]["db_url"]
        assert stored == "postgresql+psycopg://fedloom:***@db.internal:5432/fedloom"
    with sqlite3.connect(tmp_path / "home" / "fedloom.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert PASSWORD not in dump


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+nosuchdriver://fedloom:{PASSWORD}@db.internal/fedloom",
        f"postgresql+psycopg://fedloom:{PASSWORD}@db.internal:notaport/fedloom",
        f"post gres://fedloom:{PASSWORD}@db.internal/fedloom",
    ],
)
def test_an_unusable_db_url_is_reported_without_its_password(url):
    with pytest.raises(StoreError, match="cannot use database URL") as info:
        SqlStore(url)
    assert PASSWORD not in str(info.value)
    assert info.value.__cause__ is None  # a chained driver error would print the URL again
    assert "fedloom:***@db.internal" in str(info.value)


def _client(aggregator: Aggregator) -> TestClient:
    client = TestClient(create_app(aggregator, background_tick=False))
    client.__enter__()
    return client


def test_a_store_failure_sends_agents_a_generic_503_and_logs_the_reason(make_aggregator, store, caplog):
    agg = make_aggregator()
    token = store.create_token("site-a")
    client = _client(agg)
    try:
        credential = client.post("/v1/agents/register", json={"name": "site-a", "join_token": token}).json()
        internal = "could not read blob at /var/lib/fedloom/blobs/ab/cd (db.internal:5432)"

        def broken() -> None:
            raise StoreError(internal)

        agg.status = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="fedloom.aggregator"):
            response = client.get("/v1/status", headers={"Authorization": f"Bearer {credential['credential']}"})
    finally:
        client.__exit__(None, None, None)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "store_unavailable"
    for leak in ("/var/lib", "db.internal", "5432", "blob"):
        assert leak not in body["detail"]
    assert internal in caplog.text


def test_health_is_503_while_the_database_is_down(make_aggregator, store, tmp_path, monkeypatch):
    agg = make_aggregator()
    client = _client(agg)
    try:
        assert (client.get("/v1/health").status_code, client.get("/v1/health").json()) == (200, {"ok": True})
        unreachable = create_engine(sqlite_url(tmp_path / "no-such-dir" / "fedloom.db"))
        monkeypatch.setattr(store, "_engine", unreachable)
        down = client.get("/v1/health")
        monkeypatch.undo()
        up_again = client.get("/v1/health")
    finally:
        client.__exit__(None, None, None)
    assert (down.status_code, down.json()["error"]) == (503, "store_unavailable")
    assert "no-such-dir" not in down.json()["detail"]
    assert up_again.status_code == 200


def test_a_start_that_fails_on_unwritable_blobs_marks_the_run_failed(tmp_path, clock):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the blob folder should be")
    with SqlStore(sqlite_url(tmp_path / "fedloom.db"), blob_root=blocker / "blobs") as store:
        with pytest.raises(StoreError, match="could not write blob"):
            Aggregator(config(), store, clock=clock, initial_weights=INIT)
        (run,) = store.list_runs()
        assert run.status == "failed"
        assert run.summary is not None
        assert "could not write blob" in run.summary["error"]
        assert run.finished_at is not None


def test_the_default_store_is_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with SqlStore.open_default(home) as store:
        store.create_run("x", "deployment", {}, seed=0)
    assert (home / "fedloom.db").stat().st_mode & 0o777 == 0o600
    for name in ("fedloom.db-wal", "fedloom.db-shm"):
        if (home / name).exists():
            assert (home / name).stat().st_mode & 0o077 == 0, name
    assert (home / "blobs").stat().st_mode & 0o777 == 0o700
    assert home.stat().st_mode & 0o777 == 0o700
