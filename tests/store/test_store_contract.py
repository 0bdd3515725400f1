"""The contract every store backend must honour, run against each backend in BACKENDS.

Only SQLite runs today. To add PostgreSQL, append "postgres" to BACKENDS: its factory
skips unless ``FEDLOOM_TEST_POSTGRES_URL`` names a reachable server and psycopg is
installed, so the suite stays green on machines without one.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select

from fedloom.core.errors import IntegrityError, StoreError, ValidationError
from fedloom.core.serialization import content_hash
from fedloom.core.weights import Weights
from fedloom.store import FileBlobStore, SqlStore, Store
from fedloom.store.schema import Base, SchemaVersionRow
from fedloom.store.sql import sqlite_url


@dataclass(frozen=True)
class Backend:
    """How to open (and re-open) one backend's store on a fresh database."""

    name: str
    url: str
    blob_root: Path

    def open(self) -> SqlStore:
        return SqlStore(self.url, blob_root=self.blob_root)


def _sqlite_backend(tmp_path: Path) -> Backend:
    url = sqlite_url(tmp_path / "fedloom.db").render_as_string(hide_password=False)
    return Backend("sqlite", url, tmp_path / "blobs")


def _postgres_backend(tmp_path: Path) -> Backend:
    url = os.environ.get("FEDLOOM_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set FEDLOOM_TEST_POSTGRES_URL to run the store contract against PostgreSQL")
    pytest.importorskip("psycopg")
    engine = create_engine(url)
    try:
        Base.metadata.drop_all(engine)  # every test starts from an empty database
    except Exception as exc:  # any connection failure means "no server here"
        pytest.skip(f"PostgreSQL at FEDLOOM_TEST_POSTGRES_URL is not reachable: {exc}")
    finally:
        engine.dispose()
    return Backend("postgres", url, tmp_path / "blobs")


FACTORIES: dict[str, Callable[[Path], Backend]] = {"sqlite": _sqlite_backend, "postgres": _postgres_backend}
BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return FACTORIES[request.param](tmp_path)


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
    assert isinstance(store, Store)


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
    path = FileBlobStore(backend.blob_root).path_for(record.blob_key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        store.load_global_model(run_id, 0)


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


def test_schema_version_is_one_and_reopening_keeps_data(backend: Backend) -> None:
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
    assert [tuple(row) for row in rows] == [(1, 1)]
