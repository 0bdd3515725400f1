"""`fedloom server`'s store and `fedloom models export` with blobs in S3 (a real moto server on loopback).

The aggregator's ``[server] blob_url = "s3://bucket/prefix"`` puts model blobs in the
bucket (none under HOME/blobs); the run records that URL (never an endpoint or a
credential), so ``models export`` finds the blobs again with no extra flag, and
``--blob-url`` points at them explicitly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedloom.cli.models import register
from fedloom.cli.server import open_store
from fedloom.core import from_bytes
from fedloom.core.errors import ConfigError, StoreError
from fedloom.server.config import load_config
from fedloom.store import SqlStore

WEIGHTS = {
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    "bn.running_var": np.array([1e-30, 3e38], dtype=np.float64),
    "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
}


def _export(capsys: pytest.CaptureFixture[str], *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fedloom")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "export", *argv])
    code: int = args.func(args)
    capsys.readouterr()
    return code


def _s3_objects(endpoint: str, bucket: str) -> list[str]:
    import boto3

    client: Any = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return [str(item["Key"]) for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def s3_run(s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose SQLite store holds one deployment run with a global model whose blob is in S3."""
    monkeypatch.setenv("FEDLOOM_S3_ENDPOINT", s3_endpoint)
    home = tmp_path / "home"
    config = load_config(overrides={"home": str(home), "blob_url": f"s3://{s3_bucket}/fleet"}, environ={})
    store, _home = open_store(config)
    with store:
        run_id = store.create_run("pilot", "deployment", config.to_record(), seed=0)
        store.save_global_model(run_id, 0, WEIGHTS, num_samples=42)
    return home


def test_the_aggregator_store_puts_blobs_in_the_bucket_only(s3_run: Path, s3_endpoint: str, s3_bucket: str) -> None:
    objects = _s3_objects(s3_endpoint, s3_bucket)
    assert len(objects) == 1
    assert objects[0].startswith("fleet/")
    assert not [p for p in (s3_run / "blobs").rglob("*") if p.is_file()]
    with SqlStore.open_default(s3_run) as store:
        stored = json.dumps(store.list_runs()[0].config)
    assert f"s3://{s3_bucket}/fleet" in stored
    assert s3_endpoint not in stored  # only the s3:// URL is recorded
    assert "fedloom-test-secret" not in stored


def test_export_finds_the_s3_blobs_from_the_recorded_blob_url(
    s3_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.safetensors"
    assert _export(capsys, "--home", str(s3_run), "--round", "0", "--out", str(out)) == 0
    weights, header = from_bytes(out.read_bytes())
    assert header.num_samples == 42
    assert weights["bn.num_batches_tracked"].shape == ()
    assert int(weights["bn.num_batches_tracked"]) == 7
    assert weights["bn.running_var"].tobytes() == WEIGHTS["bn.running_var"].tobytes()


def test_an_explicit_blob_url_overrides_the_recorded_one(
    s3_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.safetensors"
    with pytest.raises(StoreError, match="is missing from"):
        _export(capsys, "--home", str(s3_run), "--blob-url", str(tmp_path / "empty"), "--round", "0", "--out", str(out))
    assert not out.exists()


def test_a_bad_blob_url_names_the_field(tmp_path: Path) -> None:
    leaky = "s3://AKIAEXAMPLE:hunter2@fedloom-models/p"
    config = load_config(overrides={"home": str(tmp_path), "blob_url": leaky}, environ={})
    with pytest.raises(ConfigError, match=r"\[server\] blob_url: .*must not carry credentials") as raised:
        open_store(config)
    assert "hunter2" not in str(raised.value)
    assert "AKIAEXAMPLE" not in str(raised.value)
