"""A real aggregator and real agents on loopback with every model blob in a real S3 server (moto).

The aggregator gets ``--blob-url s3://bucket/e2e`` and, in its environment only, the
endpoint (``FEDLOOM_S3_ENDPOINT``) and credentials (``AWS_*``). The federation must run
to the end with no blob on the aggregator's disk, and ``models export`` must read the
final model back from the bucket through the run's recorded ``blob_url``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import FAST_LEARNING, Cluster
from fedloom.cli.models import register
from fedloom.core import from_bytes
from fedloom.core.reserved import model_part
from fedloom.store import SqlStore
from fedloom.store.blob_urls import blob_store_from_url


def _objects(endpoint: str, bucket: str) -> list[str]:
    import boto3

    client: Any = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [str(item["Key"]) for page in pages for item in page.get("Contents", [])]


def _export(home: Path, round_no: int, out: Path) -> int:
    parser = argparse.ArgumentParser(prog="fedloom")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "export", "--home", str(home), "--round", str(round_no), "--out", str(out)])
    code: int = args.func(args)
    return code


def test_a_federation_keeps_every_model_in_s3(
    cluster: Cluster, s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLOOM_S3_ENDPOINT", s3_endpoint)  # the aggregator process inherits it, and AWS_*
    blob_url = f"s3://{s3_bucket}/e2e"
    cluster.start_server(max_rounds=3, min_agents=2, deadline_seconds=60, blob_url=blob_url, **FAST_LEARNING)
    agents = cluster.start_agents(2)
    for agent in agents:
        assert cluster.wait_exit(agent, 90) == 0, agent.output()[-3000:]
    assert cluster.server is not None
    assert cluster.wait_exit(cluster.server, 20) == 0, cluster.server.output()[-3000:]
    assert cluster.global_rounds() == [0, 1, 2, 3]

    objects = _objects(s3_endpoint, s3_bucket)
    assert objects and all(name.startswith("e2e/") for name in objects)
    assert not [p for p in (cluster.home / "blobs").rglob("*") if p.is_file()]  # nothing on the aggregator's disk

    with SqlStore.open_default(cluster.home, blobs=blob_store_from_url(blob_url)) as store:
        run = store.find_run("default", kind="deployment")
        assert run is not None
        assert run.config["server"]["blob_url"] == blob_url
        assert s3_endpoint not in str(run.config)
        stored_keys = {m.blob_key for m in store.list_global_models(run.id)}
        final = model_part(store.load_global_model(run.id, 3))
        initial = model_part(store.load_global_model(run.id, 0))
    assert {f"e2e/{k[:2]}/{k[2:]}" for k in stored_keys if k} <= set(objects)
    assert any(not np.array_equal(final[name], initial[name]) for name in final)  # the agents trained

    out = tmp_path / "final.safetensors"
    assert _export(cluster.home, 3, out) == 0
    exported, header = from_bytes(out.read_bytes())
    assert header.round == 3
    assert all(exported[name].tobytes() == final[name].tobytes() for name in final)
