"""The blob contract, run on every blob backend: the filesystem and S3 (a real moto server on loopback).

Both backends must store under the SHA-256 key, be idempotent, repair a truncated
blob, detect corruption on read, raise the same ``StoreError`` for a missing blob,
delete idempotently and refuse invalid keys and non-bytes. The S3-only tests below
cover what only S3 has: bucket/prefix validation, credentials from the environment or
a profile only, and the missing-extra message.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedloom.core.errors import ConfigError, IntegrityError, StoreError
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.store import BlobStore, FileBlobStore
from fedloom.store.s3_blobs import S3BlobStore


@dataclass
class Backend:
    """A blob store plus raw access to what it stored, to tamper with it as a disk or a bucket could."""

    blobs: BlobStore
    objects: Callable[[], list[str]]  # every stored object's location, relative to the store's root
    overwrite: Callable[[str, bytes], None]  # replace the raw bytes under a blob key


def _file_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    blobs = FileBlobStore(tmp_path / "blobs")

    def objects() -> list[str]:
        root = blobs.root
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []

    return Backend(blobs, objects, lambda key, data: blobs.path_for(key).write_bytes(data))


def _s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    blobs = S3BlobStore(bucket, prefix="runs/models", endpoint_url=endpoint, region="us-east-1")
    client = _s3_client(endpoint)

    def objects() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(str(item["Key"]).removeprefix("runs/models/") for item in listed)

    def overwrite(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=blobs.object_key(key), Body=data)

    return Backend(blobs, objects, overwrite)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factories = {"file": _file_backend, "s3": _s3_backend}
    return factories[request.param](request, tmp_path)


def _model_bytes() -> bytes:
    """A real model payload: BatchNorm buffers (0-d int64 counter), float64, huge and tiny values."""
    weights = {
        "conv.weight": np.random.default_rng(3).standard_normal((8, 3, 3, 3)).astype(np.float32),
        "bn.running_mean": np.array([1e300, -1e-300, 0.0, -0.0], dtype=np.float64),
        "bn.running_var": np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32),
        "bn.num_batches_tracked": np.array(2**62, dtype=np.int64),
        "scale": np.array(0.5, dtype=np.float64),
    }
    return to_bytes(weights, round=4, client_id="site-a", num_samples=120)


# ------------------------------------------------------------- the shared contract


def test_put_get_round_trip_under_the_sha256_key(backend: Backend) -> None:
    key = backend.blobs.put(b"model bytes")
    assert key == hashlib.sha256(b"model bytes").hexdigest()
    assert backend.blobs.get(key) == b"model bytes"
    assert backend.blobs.exists(key)
    assert backend.objects() == [f"{key[:2]}/{key[2:]}"]
    assert isinstance(backend.blobs, BlobStore)


def test_a_model_payload_round_trips_bit_exactly(backend: Backend) -> None:
    payload = _model_bytes()
    key = backend.blobs.put(payload)
    stored = backend.blobs.get(key)
    assert stored == payload
    weights, header = from_bytes(stored)
    assert weights["bn.num_batches_tracked"].shape == ()
    assert int(weights["bn.num_batches_tracked"]) == 2**62
    assert weights["bn.running_mean"].tobytes() == np.array([1e300, -1e-300, 0.0, -0.0]).tobytes()
    assert (header.round, header.client_id, header.num_samples) == (4, "site-a", 120)


def test_put_is_idempotent(backend: Backend) -> None:
    key = backend.blobs.put(b"same")
    assert backend.blobs.put(bytearray(b"same")) == key
    assert backend.blobs.put(memoryview(b"same")) == key
    assert backend.objects() == [f"{key[:2]}/{key[2:]}"]


def test_put_repairs_a_truncated_blob(backend: Backend) -> None:
    key = backend.blobs.put(b"0123456789")
    backend.overwrite(key, b"01234")
    backend.blobs.put(b"0123456789")
    assert backend.blobs.get(key) == b"0123456789"


def test_corruption_is_detected_on_read(backend: Backend) -> None:
    key = backend.blobs.put(b"original")
    backend.overwrite(key, b"tampered")
    with pytest.raises(IntegrityError, match=f"blob {key} .* is corrupted"):
        backend.blobs.get(key)


def test_missing_blob_and_idempotent_delete(backend: Backend) -> None:
    key = backend.blobs.put(b"to delete")
    backend.blobs.delete(key)
    backend.blobs.delete(key)
    assert not backend.blobs.exists(key)
    assert backend.objects() == []
    with pytest.raises(StoreError, match=f"blob {key} is missing from"):
        backend.blobs.get(key)


INVALID_KEYS = ["../../etc/passwd", "/" + "a" * 63, "A" * 64, "a" * 63, "", "g" * 64, "ab/" + "c" * 61]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    for call in (backend.blobs.get, backend.blobs.exists, backend.blobs.delete):
        with pytest.raises(StoreError, match="invalid blob key"):
            call(key)


def test_non_bytes_are_refused(backend: Backend) -> None:
    with pytest.raises(StoreError, match="bytes"):
        backend.blobs.put("text")  # type: ignore[arg-type]
    assert backend.objects() == []


# ------------------------------------------------------------------ S3 only


def test_prefixes_keep_stores_apart_in_one_bucket(s3_endpoint: str, s3_bucket: str) -> None:
    first = S3BlobStore(s3_bucket, prefix="fleet-a/", endpoint_url=s3_endpoint)
    second = S3BlobStore(s3_bucket, prefix="fleet-b", endpoint_url=s3_endpoint)
    key = first.put(b"only in a")
    assert first.object_key(key) == f"fleet-a/{key[:2]}/{key[2:]}"
    assert not second.exists(key)
    with pytest.raises(StoreError, match=f"blob {key} is missing from s3://{s3_bucket}/fleet-b/"):
        second.get(key)


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "..", "a/./b", "a b", "a\\b"])
def test_invalid_prefixes_are_refused(s3_endpoint: str, s3_bucket: str, prefix: str) -> None:
    with pytest.raises(ConfigError, match="S3 blob prefix"):
        S3BlobStore(s3_bucket, prefix=prefix, endpoint_url=s3_endpoint)


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "a" * 64, "-start", "end-", "dots..dots", "with/slash"])
def test_invalid_buckets_are_refused(bucket: str) -> None:
    with pytest.raises(ConfigError, match="invalid S3 bucket"):
        S3BlobStore(bucket)


def test_a_missing_bucket_is_a_store_error_naming_it(s3_endpoint: str, s3_bucket: str) -> None:
    blobs = S3BlobStore("no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match=r"could not write blob .* to s3://no-such-bucket-here/: .*NoSuchBucket"):
        blobs.put(b"nowhere to go")


def test_credentials_come_only_from_the_environment(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parameters = set(inspect.signature(S3BlobStore).parameters)
    assert parameters == {"bucket", "prefix", "endpoint_url", "region", "profile"}
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    blobs = S3BlobStore(s3_bucket, endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        blobs.put(b"no credentials")


def test_a_named_profile_of_a_credentials_file_is_used(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text("[fedloom-blobs]\naws_access_key_id = from-file\naws_secret_access_key = from-file-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    blobs = S3BlobStore(s3_bucket, endpoint_url=s3_endpoint, profile="fedloom-blobs")
    key = blobs.put(b"with profile credentials")
    assert blobs.get(key) == b"with profile credentials"
    with pytest.raises(ConfigError, match=r"could not set up the S3 client .*no-such-profile"):
        S3BlobStore(s3_bucket, endpoint_url=s3_endpoint, profile="no-such-profile")


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[s3\]'"):
        S3BlobStore("fedloom-models")
