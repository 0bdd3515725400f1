"""The contract every store backend must honour, run against each backend in BACKENDS.

SQLite always runs. PostgreSQL runs against the session's throwaway server (see
``conftest.py``: a local ``initdb``/``pg_ctl`` server, or ``FEDLOOM_TEST_POSTGRES_URL``)
and skips with the reason when none can be had, so the suite stays green without one.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection, create_engine, event, inspect, select, text, update

from fedloom.core.errors import FedloomError, IntegrityError, RegistrationRefusedError, StoreError, ValidationError
from fedloom.core.serialization import content_hash
from fedloom.core.store_protocols import LocalModelWrite, RunWriter
from fedloom.core.weights import Weights
from fedloom.store import SCHEMA_VERSION, AgentRecord, FileBlobStore, SqlStore, TokenRecord, schema
from fedloom.store.blob_urls import S3_ENDPOINT_ENV, blob_store_from_url
from fedloom.store.s3_blobs import S3BlobStore
from fedloom.store.schema import AgentRow, Base, SchemaVersionRow
from fedloom.store.sql import sqlite_url


@dataclass(frozen=True)
class Backend:
    """How to open (and re-open) one backend's store on a fresh database."""

    name: str
    url: str
    blob_root: Path
    blob_url: str | None = None  # set: blobs in the store this URL names (S3), not under blob_root

    def open(self) -> SqlStore:
        if self.blob_url is not None:
            return SqlStore(self.url, blobs=blob_store_from_url(self.blob_url))
        return SqlStore(self.url, blob_root=self.blob_root)


def _sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = sqlite_url(tmp_path / "fedloom.db").render_as_string(hide_password=False)
    return Backend("sqlite", url, tmp_path / "blobs")


def _postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url: str = request.getfixturevalue("postgres_url")  # started once, on first use
    _empty_database(url)  # every test starts from an empty database
    return Backend("postgres", url, tmp_path / "blobs")


def _sqlite_s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """SQLite rows with the blobs in a bucket of the session's moto S3 server (tests/store/conftest.py)."""
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("monkeypatch").setenv(S3_ENDPOINT_ENV, endpoint)
    url = sqlite_url(tmp_path / "fedloom.db").render_as_string(hide_password=False)
    return Backend("sqlite-s3", url, tmp_path / "blobs", blob_url=f"s3://{bucket}/contract/blobs")


def _empty_database(url: str) -> None:
    """Empty the current schema's tables (fast), or drop every table when they are not exactly it."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked transaction fails the test, not hangs
            names = inspect(conn).get_table_names()
            quoted = ", ".join(map(conn.dialect.identifier_preparer.quote, names))
            current = set(names) == set(Base.metadata.tables) and _stamped_version(conn) == SCHEMA_VERSION
            if current:
                data = [n for n in names if n != SchemaVersionRow.__tablename__]
                conn.execute(text(f"TRUNCATE {', '.join(data)} RESTART IDENTITY CASCADE"))
            elif names:
                conn.execute(text(f"DROP TABLE {quoted} CASCADE"))
    finally:
        engine.dispose()


def _stamped_version(conn: Connection) -> int | None:
    return conn.execute(select(SchemaVersionRow.version)).scalar_one_or_none()


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "sqlite": _sqlite_backend,
    "postgres": _postgres_backend,
    "sqlite-s3": _sqlite_s3_backend,
}
BACKENDS = ["sqlite", "postgres", "sqlite-s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return FACTORIES[request.param](request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[SqlStore]:
    opened = backend.open()
    yield opened
    opened.close()


@pytest.fixture
def run_id(store: SqlStore) -> str:
    return store.create_run("contract", "simulation", {"lr": 0.1, "rounds": 3}, seed=7)


def _model(seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "dense.bias": np.array([0.0, -0.0, np.nan, np.inf], dtype=np.float64),
        "half": rng.standard_normal(5).astype(np.float16),
        "steps": np.array([1, -2, 3], dtype=np.int64),
        "mask": np.array([True, False]),
    }


def _bitwise_equal(a: Weights, b: Weights) -> bool:
    """Equal names, dtypes, shapes and bytes: stricter than ==, so NaN and -0.0 count."""
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --------------------------------------------------------------------- runs


def test_store_satisfies_the_protocol(store: SqlStore) -> None:
    assert isinstance(store, RunWriter)


def test_run_lifecycle(store: SqlStore) -> None:
    run_id = store.create_run("mnist-fedavg", "simulation", {"lr": np.float32(0.5), "path": Path("/d")}, seed=42)
    run = store.get_run(run_id)
    assert (run.id, run.name, run.kind, run.status, run.seed) == (run_id, "mnist-fedavg", "simulation", "running", 42)
    assert run.config == {"lr": 0.5, "path": "/d"}
    assert run.created_at.tzinfo == UTC
    assert run.finished_at is None
    assert run.summary is None
    store.finish_run(run_id, "finished", {"accuracy": 0.91})
    done = store.get_run(run_id)
    assert done.status == "finished"
    assert done.summary == {"accuracy": 0.91}
    assert done.finished_at is not None
    assert done.finished_at >= done.created_at


def test_list_runs_is_newest_first_and_limited(store: SqlStore) -> None:
    ids = [store.create_run(f"run{i}", "deployment", {}, seed=i) for i in range(3)]
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(limit=2)] == ids[:0:-1]


@pytest.mark.parametrize(("kind", "status"), [("batch", "finished"), ("simulation", "running"), ("simulation", "done")])
def test_invalid_kind_or_final_status_is_refused(store: SqlStore, kind: str, status: str) -> None:
    with pytest.raises(StoreError):
        run_id = store.create_run("x", kind, {}, seed=0)
        store.finish_run(run_id, status)


def test_unserialisable_config_is_a_store_error(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="JSON"):
        store.create_run("x", "simulation", {"model": object()}, seed=0)


def test_writes_to_an_unknown_run_name_the_run(store: SqlStore) -> None:
    ghost = "0" * 32
    with pytest.raises(StoreError, match="no run with id"):
        store.open_round(ghost, 1, ["a"])
    with pytest.raises(StoreError, match="no run with id"):
        store.record_metrics(ghost, 1, {"loss": 1.0})
    with pytest.raises(StoreError, match="no such run"):
        store.finish_run(ghost, "failed")


# --------------------------------------------------------------------- clients and rounds


def test_register_client_is_idempotent(store: SqlStore, run_id: str) -> None:
    store.register_client(run_id, "site-a", 120, extra={"region": "eu"})
    store.register_client(run_id, "site-a", 120, extra={"region": "eu"})
    store.register_clients(run_id, [("site-a", 120), ("site-b", None)])
    clients = store.list_clients(run_id)
    assert [(c.client_id, c.num_samples) for c in clients] == [("site-a", 120), ("site-b", None)]
    assert clients[0].extra == {"region": "eu"}


def test_register_ten_thousand_clients_is_fast(store: SqlStore, run_id: str) -> None:
    items = [(f"client-{i:05d}", 10 + i % 50) for i in range(10_000)]
    started = time.perf_counter()
    store.register_clients(run_id, items)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"registering 10,000 clients took {elapsed:.2f} s"
    assert len(store.list_clients(run_id)) == 10_000


def test_round_open_and_close(store: SqlStore, run_id: str) -> None:
    store.open_round(run_id, 1, ["a", "b", "c"])
    (opened,) = store.list_rounds(run_id)
    assert (opened.status, opened.selected, opened.closed_at) == ("open", ("a", "b", "c"), None)
    store.close_round(run_id, 1, num_updates=2, num_samples=300)
    store.open_round(run_id, 2, ["a"])
    store.close_round(run_id, 2, status="abandoned")
    first, second = store.list_rounds(run_id)
    assert (first.status, first.num_updates, first.num_samples) == ("closed", 2, 300)
    assert first.closed_at is not None
    assert first.closed_at >= first.opened_at
    assert second.status == "abandoned"


def test_round_state_errors(store: SqlStore, run_id: str) -> None:
    store.open_round(run_id, 1, ["a"])
    with pytest.raises(StoreError, match="already opened"):
        store.open_round(run_id, 1, ["a"])
    store.close_round(run_id, 1)
    with pytest.raises(StoreError, match="already closed"):
        store.close_round(run_id, 1)
    with pytest.raises(StoreError, match="never opened"):
        store.close_round(run_id, 9)
    with pytest.raises(StoreError, match="status"):
        store.close_round(run_id, 1, status="open")


# --------------------------------------------------------------------- global models


def test_exactly_one_global_model_per_round(store: SqlStore, run_id: str) -> None:
    model_id = store.save_global_model(run_id, 0, _model(0), num_samples=0)
    with pytest.raises(StoreError, match="exactly one"):
        store.save_global_model(run_id, 0, _model(1), num_samples=10)
    (record,) = store.list_global_models(run_id)
    assert (record.id, record.round, record.client_id, record.is_global) == (model_id, 0, None, True)
    assert record.sha256 == content_hash(_model(0))


def test_load_global_model_round_trips_bit_exactly(store: SqlStore, run_id: str) -> None:
    weights = _model(3)
    store.save_global_model(run_id, 1, weights, num_samples=500)
    loaded = store.load_global_model(run_id, 1)
    assert _bitwise_equal(loaded, weights)


def test_latest_global_model(store: SqlStore, run_id: str) -> None:
    assert store.latest_global_model(run_id) is None
    for rnd in (0, 2, 1):
        store.save_global_model(run_id, rnd, _model(rnd), num_samples=rnd * 10)
    latest = store.latest_global_model(run_id)
    assert latest is not None
    assert (latest.round, latest.num_samples) == (2, 20)
    assert [m.round for m in store.list_global_models(run_id)] == [0, 1, 2]


def test_invalid_weights_are_refused_before_anything_is_written(store: SqlStore, run_id: str) -> None:
    with pytest.raises(ValidationError):
        store.save_global_model(run_id, 0, {}, num_samples=0)
    assert store.list_global_models(run_id) == []


def test_missing_global_model_is_a_store_error(store: SqlStore, run_id: str) -> None:
    with pytest.raises(StoreError, match="no global model for round 5"):
        store.load_global_model(run_id, 5)


def test_blob_write_is_atomic(store: SqlStore, backend: Backend, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.blob_url is not None:
        pytest.skip("a filesystem rename; S3 PUTs are atomic and test_blob_contract.py covers failed S3 writes")

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash during rename")

    monkeypatch.setattr("fedloom.store.blobs.os.replace", crash)
    with pytest.raises(StoreError, match="could not write blob"):
        store.save_global_model(run_id, 0, _model(), num_samples=0)
    assert store.list_global_models(run_id) == []
    assert _files_under(backend.blob_root) == []
    monkeypatch.undo()
    store.save_global_model(run_id, 0, _model(), num_samples=0)
    assert _bitwise_equal(store.load_global_model(run_id, 0), _model())


def test_corrupted_blob_raises_integrity_error(store: SqlStore, backend: Backend, run_id: str) -> None:
    store.save_global_model(run_id, 0, _model(), num_samples=0)
    record = store.latest_global_model(run_id)
    assert record is not None
    assert record.blob_key is not None
    _flip_last_byte(backend, record.blob_key)
    with pytest.raises(IntegrityError):
        store.load_global_model(run_id, 0)


def _flip_last_byte(backend: Backend, key: str) -> None:
    """Corrupt the stored blob the way a bad disk or a tampering hand would, file or S3."""
    if backend.blob_url is None:
        path = FileBlobStore(backend.blob_root).path_for(key)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    import boto3

    blobs = blob_store_from_url(backend.blob_url)
    assert isinstance(blobs, S3BlobStore)
    client = boto3.client("s3", endpoint_url=blobs.endpoint_url, region_name="us-east-1")
    name = blobs.object_key(key)
    data = bytearray(client.get_object(Bucket=blobs.bucket, Key=name)["Body"].read())
    data[-1] ^= 0xFF
    client.put_object(Bucket=blobs.bucket, Key=name, Body=bytes(data))


# --------------------------------------------------------------------- local models


def test_local_models_are_stored_listed_and_loaded(store: SqlStore, run_id: str) -> None:
    store.save_local_model(run_id, 1, "b", _model(1), 20, {"loss": 0.5})
    store.save_local_model(run_id, 1, "a", _model(2), 10, {"loss": 0.7}, keep_blob=False)
    store.save_local_model(run_id, 2, "a", None, 10, {}, sha256=content_hash(_model(3)))
    assert [(m.round, m.client_id) for m in store.list_local_models(run_id)] == [(1, "a"), (1, "b"), (2, "a")]
    a1, b1 = store.list_local_models(run_id, round=1)
    assert (a1.blob_key, a1.metrics, a1.is_global) == (None, {"loss": 0.7}, False)
    assert b1.sha256 == content_hash(_model(1))
    assert _bitwise_equal(store.load_local_model(run_id, 1, "b"), _model(1))
    with pytest.raises(StoreError, match="without its weights"):
        store.load_local_model(run_id, 1, "a")


def test_local_model_errors(store: SqlStore, run_id: str) -> None:
    store.save_local_model(run_id, 1, "a", _model(), 10, {})
    with pytest.raises(StoreError, match="already has a local model"):
        store.save_local_model(run_id, 1, "a", _model(), 10, {})
    with pytest.raises(StoreError, match="sha256"):
        store.save_local_model(run_id, 1, "b", None, 10, {})
    with pytest.raises(IntegrityError):
        store.save_local_model(run_id, 1, "c", _model(1), 10, {}, sha256=content_hash(_model(2)))


def test_local_models_in_one_write_all_or_none(store: SqlStore, run_id: str) -> None:
    """A simulated round's updates in one transaction: ids in order, each as save_local_model stores it;
    a conflict or a bad one refuses the whole write, naming the client, and stores nothing."""
    ids = store.save_local_models(
        run_id, [LocalModelWrite(1, "b", _model(1), 20, {"loss": 0.5}), LocalModelWrite(1, "a", _model(2), 10, {})]
    )
    assert len(ids) == 2 and ids[0] != ids[1]
    assert [(m.client_id, m.id, m.num_samples) for m in store.list_local_models(run_id, 1)] == [
        ("a", ids[1], 10),
        ("b", ids[0], 20),
    ]
    assert _bitwise_equal(store.load_local_model(run_id, 1, "b"), _model(1))
    fresh, clash = LocalModelWrite(2, "c", _model(), 1, {}), LocalModelWrite(1, "a", _model(), 1, {})
    with pytest.raises(StoreError, match=f"client 'a' already has a local model in round 1 of run {run_id}"):
        store.save_local_models(run_id, [fresh, clash])
    with pytest.raises(StoreError, match="client 'c' already has a local model in round 2"):
        store.save_local_models(run_id, [fresh, fresh])
    with pytest.raises(StoreError, match="sha256"):
        store.save_local_models(run_id, [fresh, LocalModelWrite(2, "d", None, 1, {})])
    assert store.list_local_models(run_id, 2) == []  # nothing of a refused write was stored
    assert store.save_local_models(run_id, []) == []


# --------------------------------------------------------------------- metrics and rejections


def test_metric_series(store: SqlStore, run_id: str) -> None:
    for rnd, (loss, acc) in enumerate([(2.0, 0.1), (1.0, 0.5), (0.5, 0.8)], start=1):
        store.record_metrics(run_id, rnd, {"loss": loss, "accuracy": acc})
    store.record_metrics(run_id, 1, {"accuracy": 0.3}, scope="client", client_id="a")
    assert store.metric_series(run_id, "accuracy") == [(1, 0.1), (2, 0.5), (3, 0.8)]
    assert store.metric_series(run_id, "accuracy", scope="client") == [(1, 0.3)]
    assert store.metric_series(run_id, "missing") == []
    assert len(store.metrics(run_id)) == 7
    (client_metric,) = store.metrics(run_id, scope="client")
    assert (client_metric.client_id, client_metric.name, client_metric.value) == ("a", "accuracy", 0.3)


def test_non_finite_metrics_survive(store: SqlStore, run_id: str) -> None:
    store.record_metrics(run_id, 1, {"loss": math.nan, "grad_norm": math.inf})
    values = {m.name: m.value for m in store.metrics(run_id)}
    assert math.isnan(values["loss"])
    assert values["grad_norm"] == math.inf


def test_metric_scope_must_match_client_id(store: SqlStore, run_id: str) -> None:
    with pytest.raises(StoreError, match="client_id"):
        store.record_metrics(run_id, 1, {"loss": 1.0}, scope="client")
    with pytest.raises(StoreError, match="client_id"):
        store.record_metrics(run_id, 1, {"loss": 1.0}, client_id="a")
    with pytest.raises(StoreError, match="scope"):
        store.record_metrics(run_id, 1, {"loss": 1.0}, scope="global")


def test_rejections_are_stored_and_listed(store: SqlStore, run_id: str) -> None:
    store.record_rejection(run_id, 3, "site-b", "wrong_round", "update for round 2 arrived in round 3")
    store.record_rejection(run_id, None, None, "unknown_client", "token matches no agent")
    first, second = store.list_rejections(run_id)
    assert (first.round, first.client_id, first.code) == (3, "site-b", "wrong_round")
    assert first.reason == "update for round 2 arrived in round 3"
    assert (second.round, second.client_id, second.code) == (None, None, "unknown_client")
    assert first.created_at.tzinfo == UTC


# --------------------------------------------------------------------- lookup and persistence


def test_run_id_prefix_lookup_and_ambiguity(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = iter(uuid.UUID(h) for h in ("abcd" + "0" * 28, "abce" + "0" * 28, "1234" + "0" * 28))
    monkeypatch.setattr(uuid, "uuid4", lambda: next(fixed))
    first, second, third = (store.create_run(f"r{i}", "simulation", {}, seed=i) for i in range(3))
    assert store.get_run("abcd").id == first
    assert store.get_run("ABCE").id == second
    assert store.get_run("1").id == third
    assert store.get_run(first).id == first
    with pytest.raises(StoreError, match=r"ambiguous.*abcd0000.*abce0000"):
        store.get_run("abc")
    with pytest.raises(StoreError, match="no run with id"):
        store.get_run("ffff")
    with pytest.raises(StoreError, match="invalid run id"):
        store.get_run("ab%")


def test_reopened_store_sees_everything(backend: Backend) -> None:
    with backend.open() as first:
        run_id = first.create_run("persist", "deployment", {"k": [1, 2]}, seed=1)
        first.register_clients(run_id, [("a", 1), ("b", 2)])
        first.open_round(run_id, 1, ["a", "b"])
        first.save_global_model(run_id, 0, _model(), num_samples=0)
        first.save_local_model(run_id, 1, "a", _model(1), 1, {"loss": 0.1})
        first.record_metrics(run_id, 1, {"loss": 0.25})
        first.record_rejection(run_id, 1, "b", "invalid_weights", "NaN in dense.weight")
    with backend.open() as second:
        assert second.get_run(run_id[:6]).config == {"k": [1, 2]}
        assert [c.client_id for c in second.list_clients(run_id)] == ["a", "b"]
        assert [r.status for r in second.list_rounds(run_id)] == ["open"]
        assert _bitwise_equal(second.load_global_model(run_id, 0), _model())
        assert _bitwise_equal(second.load_local_model(run_id, 1, "a"), _model(1))
        assert second.metric_series(run_id, "loss") == [(1, 0.25)]
        assert [r.code for r in second.list_rejections(run_id)] == ["invalid_weights"]


def test_schema_version_is_current_and_reopening_keeps_data(backend: Backend) -> None:
    with backend.open() as first:
        run_id = first.create_run("versioned", "simulation", {}, seed=0)
    with backend.open() as second:
        assert second.get_run(run_id).name == "versioned"
    engine = create_engine(backend.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(SchemaVersionRow.id, SchemaVersionRow.version)).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, SCHEMA_VERSION)]


# --------------------------------------------------------------------- deployment runs


def test_find_run_returns_the_newest_of_that_name_and_kind(store: SqlStore) -> None:
    assert store.find_run("hospital") is None
    older = store.create_run("hospital", "deployment", {}, seed=0)
    store.create_run("hospital", "simulation", {}, seed=0)
    store.create_run("other", "deployment", {}, seed=0)
    found = store.find_run("hospital")
    assert found is not None
    assert found.id == older
    newer = store.create_run("hospital", "deployment", {"v": 2}, seed=1)
    found = store.find_run("hospital")
    assert found is not None
    assert (found.id, found.config) == (newer, {"v": 2})
    simulated = store.find_run("hospital", kind="simulation")
    assert simulated is not None
    assert simulated.kind == "simulation"
    with pytest.raises(StoreError, match="kind"):
        store.find_run("hospital", kind="batch")


def test_reopen_run_sets_it_running_again(store: SqlStore) -> None:
    run_id = store.create_run("resumable", "deployment", {}, seed=0)
    store.finish_run(run_id, "interrupted", {"round": 3})
    store.reopen_run(run_id)
    run = store.get_run(run_id)
    assert (run.status, run.finished_at, run.summary) == ("running", None, {"round": 3})
    store.reopen_run(run_id)  # reopening a running run changes nothing
    assert store.get_run(run_id).status == "running"
    with pytest.raises(StoreError, match="no such run"):
        store.reopen_run("0" * 32)


def test_load_local_models_returns_records_with_weights(store: SqlStore, run_id: str) -> None:
    store.save_local_model(run_id, 1, "site-b", _model(2), 20, {"loss": 0.5})
    store.save_local_model(run_id, 1, "site-a", _model(1), 10, {"loss": 0.7, "accuracy": 0.8})
    store.save_local_model(run_id, 2, "site-a", _model(3), 10, {})
    loaded = store.load_local_models(run_id, 1)
    assert [(r.client_id, r.num_samples, dict(r.metrics)) for r, _ in loaded] == [
        ("site-a", 10, {"loss": 0.7, "accuracy": 0.8}),
        ("site-b", 20, {"loss": 0.5}),
    ]
    assert _bitwise_equal(loaded[0][1], _model(1))
    assert _bitwise_equal(loaded[1][1], _model(2))
    assert store.load_local_models(run_id, 5) == []
    store.save_local_model(run_id, 3, "site-a", _model(4), 10, {}, keep_blob=False)
    with pytest.raises(StoreError, match="without its weights"):
        store.load_local_models(run_id, 3)


# --------------------------------------------------------------------- join tokens


def _table_text(backend: Backend, table: str) -> str:
    """Every value of every row of a table, as one string (to prove a secret is not in it)."""
    engine = create_engine(backend.url)
    try:
        with engine.connect() as conn:
            return repr(conn.execute(text(f"SELECT * FROM {table}")).all())
    finally:
        engine.dispose()


def test_create_token_returns_a_secret_stored_only_as_its_hash(store: SqlStore, backend: Backend) -> None:
    token = store.create_token("site-a")
    assert token.startswith("flj_")
    assert len(token) == 4 + 43
    (record,) = store.list_tokens()
    assert isinstance(record, TokenRecord)
    assert (record.name, record.role, record.revoked_at, record.active) == ("site-a", "agent", None, True)
    assert record.created_at.tzinfo == UTC
    assert not any(token in repr(v) or token[4:] in repr(v) for v in vars(record).values())
    stored = _table_text(backend, "tokens")
    assert token[4:] not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert store.create_token("ops", role="admin") != token
    assert [(t.name, t.role) for t in store.list_tokens()] == [("site-a", "agent"), ("ops", "admin")]


@pytest.mark.parametrize("name", ["", "a" * 65, "site a", "site/a", "sité", "a\n", None])
def test_token_names_are_validated(store: SqlStore, name: str) -> None:
    with pytest.raises(StoreError, match="token name"):
        store.create_token(name)


def test_token_name_edge_cases_and_roles(store: SqlStore) -> None:
    store.create_token("a" * 64)
    store.create_token("Site-A.2_b")
    with pytest.raises(StoreError, match="role"):
        store.create_token("x", role="root")
    assert store.list_tokens()[1].name == "Site-A.2_b"


def test_one_active_token_per_name_until_revoked(store: SqlStore) -> None:
    first = store.create_token("site-a")
    with pytest.raises(StoreError, match="revoke it first"):
        store.create_token("site-a")
    store.revoke_token("site-a")
    second = store.create_token("site-a")
    old, new = store.list_tokens()
    assert (old.name, old.active, new.name, new.active) == ("site-a", False, "site-a", True)
    assert old.revoked_at is not None
    assert old.revoked_at >= old.created_at
    assert store.verify_join_token(first) is None
    verified = store.verify_join_token(second)
    assert verified is not None
    assert verified.id == new.id


def test_revoke_errors(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="no token named 'ghost'"):
        store.revoke_token("ghost")
    store.create_token("site-a")
    store.revoke_token("site-a")
    with pytest.raises(StoreError, match="already revoked"):
        store.revoke_token("site-a")


def test_verify_join_token(store: SqlStore) -> None:
    token = store.create_token("site-a", role="admin")
    record = store.verify_join_token(token)
    assert record is not None
    assert (record.name, record.role, record.active) == ("site-a", "admin", True)
    for bad in ["flj_" + "A" * 43, token[:-1], token + "x", token.upper(), "", "fla_" + token[4:], "x" * 10_000]:
        assert store.verify_join_token(bad) is None
    assert store.verify_join_token(None) is None  # type: ignore[arg-type]
    assert store.verify_join_token("flj_\udcff") is None
    store.revoke_token("site-a")
    assert store.verify_join_token(token) is None


# --------------------------------------------------------------------- agents


@pytest.fixture
def token(store: SqlStore) -> TokenRecord:
    record = store.verify_join_token(store.create_token("site-a", max_agents=10))
    assert record is not None
    return record


def test_register_and_authenticate_an_agent(store: SqlStore, run_id: str, token: TokenRecord) -> None:
    agent, credential = store.register_agent(run_id, "hospital-1", token)
    assert isinstance(agent, AgentRecord)
    assert agent.id.startswith("ag_")
    assert len(agent.id) == 3 + 32
    assert (agent.run_id, agent.name, agent.role, agent.token_id) == (run_id, "hospital-1", "agent", token.id)
    assert agent.created_at.tzinfo == UTC
    assert agent.last_seen_at is not None
    assert credential.startswith("fla_")
    assert len(credential) == 4 + 43
    assert store.authenticate(credential) == agent
    assert store.get_agent(agent.id) == agent
    assert store.list_agents(run_id) == [agent]


def test_credentials_are_stored_only_as_hashes(
    store: SqlStore, backend: Backend, run_id: str, token: TokenRecord
) -> None:
    _, credential = store.register_agent(run_id, "hospital-1", token)
    stored = _table_text(backend, "agents")
    assert credential[4:] not in stored
    assert hashlib.sha256(credential.encode()).hexdigest() in stored


def test_an_admin_token_makes_admin_agents(store: SqlStore, run_id: str) -> None:
    admin = store.verify_join_token(store.create_token("ops", role="admin"))
    assert admin is not None
    agent, _ = store.register_agent(run_id, "ops-agent", admin)
    assert agent.role == "admin"


def test_registering_again_keeps_the_id_and_replaces_the_credential(
    store: SqlStore, run_id: str, token: TokenRecord
) -> None:
    first, old_credential = store.register_agent(run_id, "hospital-1", token)
    second, new_credential = store.register_agent(run_id, "hospital-1", token)
    assert second.id == first.id
    assert second.created_at == first.created_at
    assert new_credential != old_credential
    assert store.authenticate(old_credential) is None
    authenticated = store.authenticate(new_credential)
    assert authenticated is not None
    assert authenticated.id == first.id
    assert [a.id for a in store.list_agents(run_id)] == [first.id]


def test_revoking_the_token_locks_its_agents_out(store: SqlStore, run_id: str, token: TokenRecord) -> None:
    agent, credential = store.register_agent(run_id, "hospital-1", token)
    other = store.verify_join_token(store.create_token("site-b"))
    assert other is not None
    _, other_credential = store.register_agent(run_id, "hospital-2", other)
    store.revoke_token("site-a")
    assert store.authenticate(credential) is None
    assert store.authenticate(other_credential) is not None  # other tokens' agents are unaffected
    with pytest.raises(StoreError, match="revoked"):
        store.register_agent(run_id, "hospital-1", token)  # a token record verified before the revoke
    assert store.authenticate(credential) is None  # the refused registration changed nothing
    fresh = store.verify_join_token(store.create_token("site-a"))
    assert fresh is not None
    again, new_credential = store.register_agent(run_id, "hospital-1", fresh)
    assert (again.id, again.token_id) == (agent.id, fresh.id)
    assert store.authenticate(new_credential) is not None


def _verified(store: SqlStore, name: str, role: str = "agent", max_agents: int = 1) -> TokenRecord:
    record = store.verify_join_token(store.create_token(name, role=role, max_agents=max_agents))
    assert record is not None
    return record


def test_a_name_is_bound_to_the_token_that_registered_it(store: SqlStore, run_id: str) -> None:
    victim_token, impostor_token = _verified(store, "site-a"), _verified(store, "site-b", role="admin")
    victim, credential = store.register_agent(run_id, "site-a", victim_token)
    with pytest.raises(RegistrationRefusedError, match="already registered with another join token") as refused:
        store.register_agent(run_id, "site-a", impostor_token)
    assert refused.value.code == "name_taken"
    assert store.authenticate(credential) == store.get_agent(victim.id)  # the victim keeps working
    assert [(a.name, a.role, a.token_id) for a in store.list_agents(run_id)] == [("site-a", "agent", victim_token.id)]
    assert [t.used for t in store.list_tokens()] == [1, 0]  # the refusal used none of site-b's limit


def test_re_registering_never_changes_the_role(store: SqlStore, run_id: str) -> None:
    first = _verified(store, "site-a")
    agent, _ = store.register_agent(run_id, "site-a", first)
    store.revoke_token("site-a")
    reissued = _verified(store, "site-a", role="admin")  # the same site, its token re-issued
    again, credential = store.register_agent(run_id, "site-a", reissued)
    assert (again.id, again.role, again.token_id) == (agent.id, "agent", reissued.id)
    authenticated = store.authenticate(credential)
    assert authenticated is not None
    assert authenticated.role == "agent"


def test_a_token_admits_at_most_max_agents_names(store: SqlStore, run_id: str) -> None:
    token = _verified(store, "lab", max_agents=2)
    store.register_agent(run_id, "lab-1", token)
    store.register_agent(run_id, "lab-2", token)
    with pytest.raises(RegistrationRefusedError, match="at most 2 agent name") as refused:
        store.register_agent(run_id, "lab-3", token)
    assert refused.value.code == "agent_limit"
    assert "--max-agents" in str(refused.value)
    store.register_agent(run_id, "lab-1", token)  # a known name re-registers freely
    later_run = store.create_run("deploy-2", "deployment", {}, seed=0)
    store.register_agent(later_run, "lab-2", token)  # ... in a later run too: names, not rows, count
    with pytest.raises(RegistrationRefusedError, match="at most 2"):
        store.register_agent(later_run, "lab-3", token)
    assert sorted(a.name for a in store.list_agents(run_id)) == ["lab-1", "lab-2"]
    (listed,) = store.list_tokens()
    assert (listed.used, listed.max_agents) == (2, 2)


def test_the_default_limit_is_one_agent_per_token(store: SqlStore, run_id: str) -> None:
    token = store.verify_join_token(store.create_token("site-a"))
    assert token is not None
    assert token.max_agents == 1
    store.register_agent(run_id, "site-a", token)
    with pytest.raises(RegistrationRefusedError, match="at most 1 agent name") as refused:
        store.register_agent(run_id, "sybil-1", token)
    assert refused.value.code == "agent_limit"
    for bad in (0, -1, True, 2.0, 2**31):
        with pytest.raises(StoreError, match="max_agents"):
            store.create_token("other", max_agents=bad)  # type: ignore[arg-type]


def test_revoked_agent_ids_names_the_agents_of_revoked_tokens(store: SqlStore, run_id: str) -> None:
    kept, dropped = _verified(store, "site-a"), _verified(store, "site-b")
    store.register_agent(run_id, "site-a", kept)
    gone, _ = store.register_agent(run_id, "site-b", dropped)
    assert store.revoked_agent_ids(run_id) == set()
    store.revoke_token("site-b")
    assert store.revoked_agent_ids(run_id) == {gone.id}
    back, _ = store.register_agent(run_id, "site-b", _verified(store, "site-b"))
    assert back.id == gone.id
    assert store.revoked_agent_ids(run_id) == set()  # re-registered with a new token: back in


def test_ping(store: SqlStore) -> None:
    store.ping()
    store.close()
    store._engine = create_engine("sqlite:////nonexistent-dir/x.db")
    with pytest.raises(StoreError, match="reach the database"):
        store.ping()


def test_agents_belong_to_one_run(store: SqlStore, token: TokenRecord) -> None:
    first_run = store.create_run("deploy", "deployment", {}, seed=0)
    second_run = store.create_run("deploy", "deployment", {}, seed=0)
    a1, c1 = store.register_agent(first_run, "hospital-1", token)
    a2, c2 = store.register_agent(second_run, "hospital-1", token)
    b1, _ = store.register_agent(first_run, "hospital-2", token)
    assert a1.id != a2.id
    assert [a.id for a in store.list_agents(first_run)] == [a1.id, b1.id]
    assert [a.id for a in store.list_agents(second_run)] == [a2.id]
    assert store.list_agents("f" * 32) == []
    auth1, auth2 = store.authenticate(c1), store.authenticate(c2)
    assert auth1 is not None
    assert auth2 is not None
    assert (auth1.run_id, auth2.run_id) == (first_run, second_run)


def test_agent_errors(store: SqlStore, run_id: str, token: TokenRecord) -> None:
    with pytest.raises(StoreError, match="no run with id"):
        store.register_agent("0" * 32, "hospital-1", token)
    with pytest.raises(StoreError, match="agent name"):
        store.register_agent(run_id, "no spaces", token)
    with pytest.raises(StoreError, match="no agent with id 'ag_missing'"):
        store.get_agent("ag_missing")
    assert store.list_agents(run_id) == []


def test_authenticate_refuses_anything_else(store: SqlStore, run_id: str, token: TokenRecord) -> None:
    _, credential = store.register_agent(run_id, "hospital-1", token)
    join_token = store.create_token("site-c")
    for bad in ["", "fla_", "fla_" + "A" * 43, credential[:-1], credential + "=", join_token, "x" * 100_000]:
        assert store.authenticate(bad) is None
    assert store.authenticate(None) is None  # type: ignore[arg-type]
    assert store.authenticate("fla_\u00e9") is None


def _count_agent_updates(store: SqlStore) -> list[str]:
    """Record every UPDATE of the agents table the store's engine sends."""
    statements: list[str] = []

    def before(conn: Connection, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE AGENTS"):
            statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", before)
    return statements


def test_authenticate_refreshes_last_seen_at_most_once_per_interval(
    store: SqlStore, run_id: str, token: TokenRecord
) -> None:
    agent, credential = store.register_agent(run_id, "hospital-1", token)
    updates = _count_agent_updates(store)
    for _ in range(20):
        seen = store.authenticate(credential)
        assert seen is not None
        assert seen.last_seen_at == agent.last_seen_at  # registered just now: nothing to write
    assert updates == []
    assert agent.last_seen_at is not None
    long_ago = agent.last_seen_at - timedelta(seconds=store.last_seen_interval + 1)
    _set_last_seen(store, agent.id, long_ago)
    updates.clear()
    refreshed = store.authenticate(credential)
    assert refreshed is not None
    assert refreshed.last_seen_at is not None
    assert refreshed.last_seen_at > agent.last_seen_at
    assert store.get_agent(agent.id).last_seen_at == refreshed.last_seen_at
    for _ in range(5):
        store.authenticate(credential)
    assert len(updates) == 1


def _set_last_seen(store: SqlStore, agent_id: str, when: datetime) -> None:
    with store._engine.begin() as conn:
        conn.execute(update(AgentRow).where(AgentRow.id == agent_id).values(last_seen_at=when))


def test_concurrent_registration_and_authentication(store: SqlStore, run_id: str, token: TokenRecord) -> None:
    """Threads as a web server runs them: same-name races, fresh names and last-seen writes."""
    store.last_seen_interval = 0.0  # every authenticate writes: the worst case for SQLite locking
    errors: list[BaseException] = []
    credentials: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        try:
            barrier.wait()
            name = "shared" if index % 2 else f"agent-{index}"
            for _ in range(5):
                agent, credential = store.register_agent(run_id, name, token)
                credentials.setdefault(agent.id, []).append(credential)
                store.authenticate(credential)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    agents = store.list_agents(run_id)
    assert sorted(a.name for a in agents) == ["agent-0", "agent-2", "agent-4", "agent-6", "shared"]
    shared = next(a for a in agents if a.name == "shared")
    working = [c for c in credentials[shared.id] if store.authenticate(c) is not None]
    assert len(working) == 1  # of 20 registrations of "shared", only the last credential works


# --------------------------------------------------------------------- migration v1 -> v2

_V1_TABLES = {"runs", "clients", "rounds", "global_models", "local_models", "metrics", "rejections", "schema_version"}


def _schema_snapshot(url: str) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them (names and types included)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            return {
                name: {
                    "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(name)],
                    "pk": found.get_pk_constraint(name)["constrained_columns"],
                    "fks": sorted(
                        (fk["constrained_columns"], fk["referred_table"], fk["options"])
                        for fk in found.get_foreign_keys(name)
                    ),
                    "unique": sorted((str(u["name"]), u["column_names"]) for u in found.get_unique_constraints(name)),
                    "indexes": sorted(
                        (str(i["name"]), i["column_names"], i["unique"], _options(i.get("dialect_options", {})))
                        for i in found.get_indexes(name)
                    ),
                }
                for name in sorted(found.get_table_names())
            }
    finally:
        engine.dispose()


def _options(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An index's dialect options (e.g. a partial index's WHERE) as comparable text."""
    return sorted((key, str(value)) for key, value in options.items())


def _make_v1(backend: Backend) -> None:
    """Turn the backend's database into what schema version 1 left: version 2 only added two tables
    (version 3 a column of one of them, version 4 the ``server_states`` table, version 5 ``agent_logs``,
    version 6 two columns of ``global_models``, version 7 ``cluster_models``)."""
    engine = create_engine(backend.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE cluster_models"))  # added by version 7
            conn.execute(text("ALTER TABLE global_models DROP COLUMN lineage_sha256"))  # added by version 6
            conn.execute(text("ALTER TABLE global_models DROP COLUMN config_sha256"))
            conn.execute(text("DROP TABLE agent_logs"))
            conn.execute(text("DROP TABLE server_states"))
            conn.execute(text("DROP TABLE agents"))
            conn.execute(text("DROP TABLE tokens"))
            conn.execute(update(SchemaVersionRow).values(version=1))
    finally:
        engine.dispose()


def test_v1_database_upgrades_in_place_keeping_its_data(backend: Backend) -> None:
    with backend.open() as old:
        run_id = old.create_run("before-upgrade", "deployment", {"lr": 0.1}, seed=5)
        old.register_clients(run_id, [("a", 10), ("b", 20)])
        old.open_round(run_id, 1, ["a", "b"])
        old.save_global_model(run_id, 0, _model(), num_samples=0)
        old.save_local_model(run_id, 1, "a", _model(1), 10, {"loss": 0.3})
        old.record_metrics(run_id, 1, {"accuracy": 0.5})
        old.record_rejection(run_id, 1, "b", "duplicate", "second update")
    fresh = _schema_snapshot(backend.url)
    _make_v1(backend)
    assert set(_schema_snapshot(backend.url)) == _V1_TABLES
    with backend.open() as upgraded:
        run = upgraded.get_run(run_id)
        assert (run.name, run.config, run.status) == ("before-upgrade", {"lr": 0.1}, "running")
        assert [(c.client_id, c.num_samples) for c in upgraded.list_clients(run_id)] == [("a", 10), ("b", 20)]
        assert [r.status for r in upgraded.list_rounds(run_id)] == ["open"]
        assert _bitwise_equal(upgraded.load_global_model(run_id, 0), _model())
        ((record, weights),) = upgraded.load_local_models(run_id, 1)
        assert (record.client_id, dict(record.metrics)) == ("a", {"loss": 0.3})
        assert _bitwise_equal(weights, _model(1))
        assert upgraded.metric_series(run_id, "accuracy") == [(1, 0.5)]
        assert [r.code for r in upgraded.list_rejections(run_id)] == ["duplicate"]
        token = upgraded.verify_join_token(upgraded.create_token("site-a"))
        assert token is not None
        _, credential = upgraded.register_agent(run_id, "site-a", token)
        assert upgraded.authenticate(credential) is not None
    with backend.open() as reopened:  # the upgrade ran once; reopening changes nothing
        assert [a.name for a in reopened.list_agents(run_id)] == ["site-a"]
    assert _schema_snapshot(backend.url) == fresh  # migrated == created at the current version
    engine = create_engine(backend.url)
    try:
        with engine.connect() as conn:
            assert _stamped_version(conn) == SCHEMA_VERSION == 7
    finally:
        engine.dispose()


def test_v2_migration_is_all_or_nothing(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.open().close()
    _make_v1(backend)
    to_v2 = schema.MIGRATIONS[2]

    def half_done(conn: Connection) -> None:
        to_v2(conn)
        raise RuntimeError("crash after the new tables")

    monkeypatch.setitem(schema.MIGRATIONS, 2, half_done)
    with pytest.raises(RuntimeError, match="crash"):
        backend.open()
    assert set(_schema_snapshot(backend.url)) == _V1_TABLES
    monkeypatch.undo()
    backend.open().close()
    assert set(_schema_snapshot(backend.url)) == _V1_TABLES | {
        "tokens",
        "agents",
        "server_states",
        "agent_logs",
        "cluster_models",
    }


# --------------------------------------------------------------------- backend differences made equal


def test_times_are_exact_utc_whatever_the_server_zone(store: SqlStore) -> None:
    """The test PostgreSQL runs at UTC+05:45: a zone mix-up would shift these by hours."""
    before = datetime.now(UTC)
    run_id = store.create_run("clock", "deployment", {}, seed=0)
    token = store.create_token("clock")
    after = datetime.now(UTC)
    created = store.get_run(run_id).created_at
    assert before <= created <= after
    (record,) = store.list_tokens()
    assert before <= record.created_at <= after
    assert store.verify_join_token(token) == record


def test_non_finite_values_survive_in_json_columns(store: SqlStore) -> None:
    run_id = store.create_run("json", "simulation", {"nan": math.nan, "inf": -math.inf, "nested": [1.5]}, seed=0)
    config = store.get_run(run_id).config
    assert math.isnan(config["nan"])
    assert (config["inf"], config["nested"]) == (-math.inf, [1.5])
    store.save_local_model(run_id, 1, "a", None, 1, {"loss": math.nan, "norm": math.inf}, sha256=content_hash(_model()))
    (local,) = store.list_local_models(run_id)
    assert math.isnan(local.metrics["loss"])
    assert local.metrics["norm"] == math.inf


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda s, r: s.register_client(r, "c" * 201), "at most 200 characters"),
        (lambda s, r: s.register_client(r, "a\x00b"), "NUL"),
        (lambda s, r: s.create_run("n" * 201, "simulation", {}, seed=0), "at most 200 characters"),
        (lambda s, r: s.record_metrics(r, 1, {"m" * 201: 1.0}), "at most 200 characters"),
        (lambda s, r: s.record_rejection(r, 1, None, "c" * 101, "why"), "at most 100 characters"),
        (lambda s, r: s.open_round(r, 2**31, ["a"]), "<= 2147483647"),
        (lambda s, r: s.create_run("big", "simulation", {}, seed=2**63), "<= 9223372036854775807"),
        (lambda s, r: s.create_run("big", "simulation", {}, seed=-(2**63) - 1), ">= -9223372036854775808"),
    ],
)
def test_column_limits_are_the_same_error_on_every_backend(
    store: SqlStore, run_id: str, write: Callable[[SqlStore, str], None], message: str
) -> None:
    """PostgreSQL enforces lengths, ranges and no-NUL; SQLite does not: the store checks first."""
    with pytest.raises(StoreError, match=message):
        write(store, run_id)


def test_limits_themselves_are_accepted(store: SqlStore, run_id: str) -> None:
    store.register_client(run_id, "c" * 200)
    store.create_run("n" * 200, "simulation", {}, seed=2**63 - 1)
    store.create_run("min", "simulation", {}, seed=-(2**63))
    store.open_round(run_id, 2**31 - 1, ["c" * 200])
    assert store.list_rounds(run_id)[0].round == 2**31 - 1


def test_rejections_keep_untrusted_text(store: SqlStore, run_id: str) -> None:
    """A refused request's own client id and reason are recorded even when they are garbage."""
    store.record_rejection(run_id, 1, "x" * 500 + "\x00", "forbidden", "tensor 'a\x00b' is not allowed")
    (rejection,) = store.list_rejections(run_id)
    assert rejection.client_id == "x" * 197 + "..."
    assert rejection.reason == "tensor 'a\\x00b' is not allowed"


# --------------------------------------------------------------------- server-optimiser state


def _opt_state() -> Weights:
    """What a server optimiser keeps: float64 moments (huge and tiny), float32, 0-d and integer tensors."""
    return {
        "m/dense.weight": np.array([[1e308, -1e-308], [5e-324, -0.0]], dtype=np.float64),
        "v/dense.weight": np.array([[1e-300, 3.5], [np.finfo(np.float64).max, 2.0**-1074]], dtype=np.float64),
        "m/half": np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32),
        "v/bn.scale": np.array(0.25, dtype=np.float64),  # a 0-d moment (of a 0-d model tensor)
        "count/bn.num_batches_tracked": np.array(2**62, dtype=np.int64),
    }


def test_server_state_round_trips_bitwise_with_its_step(store: SqlStore, run_id: str) -> None:
    store.save_global_model(run_id, 3, _model(), num_samples=10)
    store.save_server_state(run_id, 3, _opt_state(), step=2**40)
    loaded = store.load_server_state(run_id, 3)
    assert loaded is not None
    tensors, step = loaded
    assert _bitwise_equal(tensors, _opt_state())
    assert step == 2**40 and type(step) is int
    assert tensors["v/bn.scale"].shape == ()


def test_server_state_is_saved_with_its_global_model_in_one_write(store: SqlStore, run_id: str) -> None:
    store.save_global_model(run_id, 1, _model(), num_samples=10, server_state=(_opt_state(), 1))
    loaded = store.load_server_state(run_id, 1)
    assert loaded is not None
    assert _bitwise_equal(loaded[0], _opt_state()) and loaded[1] == 1
    assert store.load_server_state(run_id, 2) is None  # no state stored for that round


def test_a_global_model_whose_state_is_refused_is_not_stored(store: SqlStore, run_id: str) -> None:
    with pytest.raises(StoreError, match="step must be >= 0"):
        store.save_global_model(run_id, 1, _model(), num_samples=10, server_state=(_opt_state(), -1))
    assert store.list_global_models(run_id) == []


def test_server_state_needs_the_rounds_global_model_and_is_kept_once(store: SqlStore, run_id: str) -> None:
    with pytest.raises(StoreError, match="no global model for round 2: save it first"):
        store.save_server_state(run_id, 2, _opt_state(), step=1)
    store.save_global_model(run_id, 2, _model(), num_samples=10)
    store.save_server_state(run_id, 2, _opt_state(), step=1)
    with pytest.raises(StoreError, match="already has a server-optimiser state for round 2"):
        store.save_server_state(run_id, 2, _opt_state(), step=1)


@pytest.mark.parametrize(
    ("tensors", "step", "message"),
    [
        ({"fedloom.server_opt.step": np.array(1, np.int64)}, 1, "reserved"),
        ({"m/w": np.ones(2)}, True, "step must be an integer"),
        ({"m/w": np.ones(2)}, 1.5, "step must be an integer"),
        ({"m/w": [1.0, 2.0]}, 1, "must be a numpy array"),
    ],
)
def test_invalid_server_state_is_refused_and_nothing_is_written(
    store: SqlStore, run_id: str, tensors: Weights, step: int, message: str
) -> None:
    store.save_global_model(run_id, 1, _model(), num_samples=10)
    with pytest.raises(FedloomError, match=message):
        store.save_server_state(run_id, 1, tensors, step=step)
    assert store.load_server_state(run_id, 1) is None


def test_an_optimiser_state_with_no_tensors_keeps_its_step(store: SqlStore, run_id: str) -> None:
    """FedAvgM on an all-integer model has no moments, only a step counter."""
    store.save_global_model(run_id, 1, {"count": np.array(3, np.int64)}, num_samples=1, server_state=({}, 4))
    assert store.load_server_state(run_id, 1) == ({}, 4)


def test_v3_database_gains_server_states_in_place(backend: Backend) -> None:
    with backend.open() as old:
        run_id = old.create_run("before-v4", "deployment", {}, seed=0)
        old.save_global_model(run_id, 0, _model(), num_samples=0)
    fresh = _schema_snapshot(backend.url)
    engine = create_engine(backend.url)
    try:
        with engine.begin() as conn:  # what schema version 3 left
            conn.execute(text("DROP TABLE cluster_models"))  # added by version 7
            conn.execute(text("ALTER TABLE global_models DROP COLUMN lineage_sha256"))  # added by version 6
            conn.execute(text("ALTER TABLE global_models DROP COLUMN config_sha256"))
            conn.execute(text("DROP TABLE agent_logs"))  # added by version 5
            conn.execute(text("DROP TABLE server_states"))
            conn.execute(update(SchemaVersionRow).values(version=3))
    finally:
        engine.dispose()
    with backend.open() as upgraded:
        assert _bitwise_equal(upgraded.load_global_model(run_id, 0), _model())
        assert upgraded.load_server_state(run_id, 0) is None  # recorded before v4
        upgraded.save_global_model(run_id, 1, _model(1), num_samples=3, server_state=(_opt_state(), 1))
        loaded = upgraded.load_server_state(run_id, 1)
        assert loaded is not None and _bitwise_equal(loaded[0], _opt_state())
    assert _schema_snapshot(backend.url) == fresh  # migrated == created at the current version


def test_v4_database_gains_agent_logs_in_place(backend: Backend) -> None:
    from datetime import UTC, datetime

    from fedloom.core.agent_logs import AgentLogEntry

    with backend.open() as old:
        run_id = old.create_run("before-v5", "deployment", {}, seed=0)
        old.record_metrics(run_id, 1, {"loss": 0.5})
    fresh = _schema_snapshot(backend.url)
    engine = create_engine(backend.url)
    try:
        with engine.begin() as conn:  # what schema version 4 left
            conn.execute(text("DROP TABLE cluster_models"))  # added by version 7
            conn.execute(text("ALTER TABLE global_models DROP COLUMN lineage_sha256"))  # added by version 6
            conn.execute(text("ALTER TABLE global_models DROP COLUMN config_sha256"))
            conn.execute(text("DROP TABLE agent_logs"))
            conn.execute(update(SchemaVersionRow).values(version=4))
    finally:
        engine.dispose()
    with backend.open() as upgraded:
        assert [m.value for m in upgraded.metrics(run_id)] == [0.5]
        assert upgraded.agent_logs(run_id) == []
        entry = AgentLogEntry(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "INFO", "fedloom.agent", "hello")
        assert upgraded.append_agent_logs(run_id, "site-a", [entry]) == 1
        (stored,) = upgraded.agent_logs(run_id)
        assert (stored.agent, stored.created_at, stored.message) == ("site-a", entry.created_at, "hello")
    assert _schema_snapshot(backend.url) == fresh  # migrated == created at the current version


def test_v5_database_gains_lineage_columns_and_verifies_on_every_backend(backend: Backend) -> None:
    with backend.open() as old:
        run_id = old.create_run("before-v6", "deployment", {"strategy": {"lr": 0.5}}, seed=0)
        old.save_global_model(run_id, 0, _model(), num_samples=0)
    fresh = _schema_snapshot(backend.url)
    engine = create_engine(backend.url)
    try:
        with engine.begin() as conn:  # what schema version 5 left
            conn.execute(text("DROP TABLE cluster_models"))  # added by version 7
            conn.execute(text("ALTER TABLE global_models DROP COLUMN lineage_sha256"))
            conn.execute(text("ALTER TABLE global_models DROP COLUMN config_sha256"))
            conn.execute(update(SchemaVersionRow).values(version=5))
    finally:
        engine.dispose()
    with backend.open() as upgraded:
        upgraded.save_local_model(run_id, 1, "site-a", _model(1), 10, {"loss": 0.5})
        upgraded.save_global_model(run_id, 1, _model(2), num_samples=10)
        report = upgraded.verify_lineage(run_id)
        assert report.ok and (report.checked, report.unchained) == (1, (0,))
    engine = create_engine(backend.url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE runs SET config = :c WHERE id = :id"), {"c": '{"strategy": {"lr": 5}}', "id": run_id}
            )
    finally:
        engine.dispose()
    with backend.open() as tampered:
        mismatch = tampered.verify_lineage(run_id).mismatch
        assert mismatch is not None and (mismatch.round, mismatch.table) == (1, "runs")
    assert _schema_snapshot(backend.url) == fresh  # migrated == created at the current version
