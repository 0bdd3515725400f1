"""Cluster models of a federation, on SQLite and on a real PostgreSQL: written once, newest per cluster."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.federation import ClusterStore, PeerInput
from fedloom.store import SqlStore
from fedloom.store.sql import sqlite_url


def _weights(value: float, counter: int = 3) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 2), value, np.float32), "bn.num_batches_tracked": np.array(counter, np.int64)}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "fedloom.db").render_as_string(hide_password=False)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        with engine.begin() as conn:  # every test starts from an empty database
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    with SqlStore(url, blob_root=tmp_path / "blobs") as opened:
        yield opened


def test_a_cluster_model_is_written_once_and_read_back_verified(store: SqlStore, tmp_path: Path) -> None:
    assert isinstance(store, ClusterStore)
    run_id = store.create_run("fed.a1", "deployment", {}, seed=0)
    peers = [PeerInput("a2", 3, 40, "ab" * 32)]
    first = store.save_cluster_model(run_id, "fed", "a1", 4, _weights(1.5, 2**40), 30, peers)
    assert (first.cluster, first.round, first.num_samples, first.peers) == ("a1", 4, 30, tuple(peers))
    # a second write of the round (an aggregator that crashed and aggregated it again) changes nothing
    again = store.save_cluster_model(run_id, "fed", "a1", 4, _weights(9.0), 99, [])
    assert again == first == store.cluster_model(run_id, 4)
    loaded = store.load_cluster_model(first)
    assert loaded["bn.num_batches_tracked"].shape == () and int(loaded["bn.num_batches_tracked"]) == 2**40
    assert loaded["w"].dtype == np.float32 and float(loaded["w"][0, 0]) == 1.5
    assert store.cluster_model(run_id, 5) is None
    with pytest.raises(StoreError, match="num_samples"):
        store.save_cluster_model(run_id, "fed", "a1", 5, _weights(1.0), 0, [])
    for blob in (tmp_path / "blobs").rglob("*"):  # a tampered blob is refused, never averaged in
        if blob.is_file():
            blob.chmod(0o600)
            blob.write_bytes(blob.read_bytes().replace(np.float32(1.5).tobytes(), np.float32(2.5).tobytes()))
    with pytest.raises(IntegrityError):
        store.load_cluster_model(first)


def test_the_newest_model_per_cluster_up_to_a_round_from_runs_of_this_federation(store: SqlStore) -> None:
    old = store.create_run("fed.a2", "deployment", {}, seed=0)
    store.save_cluster_model(old, "fed", "a2", 9, _weights(0.0), 5, [])
    store.finish_run(old, "finished")
    a1 = store.create_run("fed.a1", "deployment", {}, seed=0)
    a2 = store.create_run("fed.a2", "deployment", {}, seed=0)
    other = store.create_run("elsewhere.a3", "deployment", {}, seed=0)
    since = store.get_run(a1).created_at
    for round_no in (1, 2, 3):
        store.save_cluster_model(a1, "fed", "a1", round_no, _weights(round_no), 10, [])
    store.save_cluster_model(a2, "fed", "a2", 1, _weights(7.0), 20, [])
    store.save_cluster_model(other, "elsewhere", "a3", 1, _weights(8.0), 20, [])
    newest = store.latest_cluster_models("fed", 2, since)
    # a1's newest round <= 2, a2's round of this federation (its old finished run's round 9 is ignored)
    assert [(m.cluster, m.round, m.run_id) for m in newest] == [("a1", 2, a1), ("a2", 1, a2)]
    assert [(m.cluster, m.round) for m in store.latest_cluster_models("fed", 0, since)] == []
    # a lower bound keeps to the rounds that can still count: a2 has nothing from round 2 on
    assert [(m.cluster, m.round) for m in store.latest_cluster_models("fed", 3, since, from_round=2)] == [("a1", 3)]
    # an earlier start admits the old run too, but a cluster's newest run still decides
    before = store.latest_cluster_models("fed", 10, since - timedelta(days=1))
    assert [(m.cluster, m.round) for m in before] == [("a1", 3), ("a2", 1)]
