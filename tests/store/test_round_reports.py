"""The tracking feed's round-bounded reads on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
from test_store_contract import backend, run_id, store  # noqa: F401 - the contract's fixtures, on both backends

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.serialization import content_hash
from fedloom.store import SqlStore
from fedloom.store.s3_blobs import S3BlobStore


def _model(value: float) -> dict[str, np.ndarray]:
    return {
        "w": np.full((2, 2), value, np.float32),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "b": np.array([1e-300, 1e300]),
    }


def test_reads_bounded_by_one_round(store: SqlStore, run_id: str) -> None:  # noqa: F811
    store.open_round(run_id, 1, ["a", "b"])
    store.record_metrics(run_id, 1, {"loss": 0.5})
    store.record_metrics(run_id, 1, {"loss": 0.7}, scope="client", client_id="a")
    store.record_metrics(run_id, 2, {"loss": 0.1})
    store.record_rejection(run_id, 1, "b", "bad_shape", "w is (3, 3), expected (2, 2)")
    store.record_rejection(run_id, 2, "a", "late", "round 2 closed")
    store.close_round(run_id, 1, num_updates=1, num_samples=10)

    round_one = store.get_round(run_id, 1)
    assert round_one is not None and round_one.selected == ("a", "b") and round_one.status == "closed"
    assert store.get_round(run_id, 9) is None
    assert [(m.scope, m.client_id, m.name, m.value) for m in store.round_metrics(run_id, 1)] == [
        ("server", None, "loss", 0.5),
        ("client", "a", "loss", 0.7),
    ]
    everything = store.rejections_after(run_id, 0)
    assert [(r.round, r.code) for r in everything] == [(1, "bad_shape"), (2, "late")]
    assert [r.code for r in store.rejections_after(run_id, everything[0].id)] == ["late"]


def test_the_latest_global_model_bytes_are_checked_against_their_hash(store: SqlStore, run_id: str) -> None:  # noqa: F811
    assert store.latest_global_model_bytes(run_id) is None
    store.save_global_model(run_id, 1, _model(1.0), 10)
    store.save_global_model(run_id, 2, _model(2.0), 10)
    found = store.latest_global_model_bytes(run_id)
    assert found is not None and found[0] == 2
    assert content_hash(_model(2.0)) == store.latest_global_model(run_id).sha256  # type: ignore[union-attr]
    key = store.latest_global_model(run_id).blob_key  # type: ignore[union-attr]
    assert key is not None
    other = store._blobs.get(store.list_global_models(run_id)[0].blob_key)  # type: ignore[union-attr, arg-type]
    if isinstance(store._blobs, S3BlobStore):  # the sqlite-s3 backend: overwrite the object in the bucket
        import boto3

        client = boto3.client("s3", endpoint_url=store._blobs.endpoint_url, region_name="us-east-1")
        client.put_object(Bucket=store._blobs.bucket, Key=store._blobs.object_key(key), Body=other)
    else:
        path = store._blobs.path_for(key)  # type: ignore[union-attr]
        path.chmod(0o600)
        path.write_bytes(other)
    with pytest.raises(IntegrityError, match="is corrupted"):
        store.latest_global_model_bytes(run_id)


def test_many_parties_metrics_are_one_write_and_read_back_per_party(store: SqlStore, run_id: str) -> None:  # noqa: F811
    by_client = {str(i): {"bytes_up": float(1000 + i), "seconds_train": 0.5} for i in range(50)}
    store.record_party_metrics(run_id, 3, "system", by_client)
    store.record_party_metrics(run_id, 3, "client", {})  # nothing to write
    rows = store.metrics(run_id, scope="system")
    assert len(rows) == 100 and {r.round for r in rows} == {3}
    assert {(r.client_id, r.value) for r in rows if r.name == "bytes_up"} == {(str(i), 1000.0 + i) for i in range(50)}
    with pytest.raises(StoreError, match="must not have one"):
        store.record_party_metrics(run_id, 3, "server", {"x": {"loss": 1.0}})
