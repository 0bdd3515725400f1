"""blob_store_from_url: one string picks the blob backend; S3 settings come from the environment only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedloom.core.errors import ConfigError
from fedloom.store import FileBlobStore, SqlStore
from fedloom.store.blob_urls import blob_store_from_url
from fedloom.store.s3_blobs import S3BlobStore
from fedloom.store.sql import sqlite_url

pytest.importorskip("boto3", reason="S3 blob URLs need boto3 (`pip install fedloom[s3]`)")

S3_ENV = {
    "FEDLOOM_S3_ENDPOINT": "http://127.0.0.1:9000",
    "FEDLOOM_S3_REGION": "eu-west-3",
    "AWS_ACCESS_KEY_ID": "k",
    "AWS_SECRET_ACCESS_KEY": "s",
}


def test_an_s3_url_names_bucket_and_prefix_and_the_environment_the_rest() -> None:
    blobs = blob_store_from_url("s3://fedloom-models/fleet/eu/", S3_ENV)
    assert isinstance(blobs, S3BlobStore)
    assert (blobs.bucket, blobs.prefix, blobs.url) == ("fedloom-models", "fleet/eu/", "s3://fedloom-models/fleet/eu/")
    assert blobs.endpoint_url == "http://127.0.0.1:9000"
    assert blobs.object_key("a" * 64) == "fleet/eu/aa/" + "a" * 62


def test_without_an_endpoint_the_store_talks_to_aws() -> None:
    blobs = blob_store_from_url("s3://fedloom-models", {})
    assert isinstance(blobs, S3BlobStore)
    assert (blobs.endpoint_url, blobs.prefix) == (None, "")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://AKIA:secret@fedloom-models/p", r"s3://fedloom-models/\.\.\. must not carry credentials"),
        ("s3://fedloom-models/p?key=1", "without '\\?' or '#'"),
        ("s3://fedloom-models/../up", "S3 blob prefix"),
        ("s3://x/p", "invalid S3 bucket 'x'"),
        ("gs://bucket/p", "scheme 'gs' is not supported"),
        ("file://host/srv/blobs", "file URLs must be local"),
        ("  ", "blob URL is empty"),
    ],
)
def test_bad_urls_are_refused_naming_the_fix(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        blob_store_from_url(url, S3_ENV)


def test_a_secret_in_the_url_never_reaches_the_message() -> None:
    with pytest.raises(ConfigError) as raised:
        blob_store_from_url("s3://AKIA:topsecret@fedloom-models/p", {})
    assert "topsecret" not in str(raised.value)
    assert "AKIA" not in str(raised.value)


@pytest.mark.parametrize("form", ["file", "path"])
def test_a_directory_gives_file_blobs(tmp_path: Path, form: str) -> None:
    url = (tmp_path / "blobs").as_uri() if form == "file" else str(tmp_path / "blobs")
    blobs = blob_store_from_url(url, {})
    assert isinstance(blobs, FileBlobStore)
    assert blobs.root == tmp_path / "blobs"


def test_a_store_takes_a_blob_root_or_a_blob_store_not_both(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fedloom.db")
    with pytest.raises(ConfigError, match=r"either blob_root .* or blobs"):
        SqlStore(url, blob_root=tmp_path / "a", blobs=FileBlobStore(tmp_path / "b"))
    with SqlStore(url, blobs=FileBlobStore(tmp_path / "b")) as store:
        run_id = store.create_run("r", "simulation", {}, seed=0)
        store.save_global_model(run_id, 0, {"w": np.zeros(2)}, num_samples=1)
    assert any(p.is_file() for p in (tmp_path / "b").rglob("*"))
