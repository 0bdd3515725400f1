"""Hostile uploads and paths through the real FastAPI app: every one a recorded refusal, never a 500."""

from __future__ import annotations

import json
import struct
import warnings

import numpy as np
import pytest
from aggregator_helpers import config, payload
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.core import content_hash
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator, load_initial_model
from fedloom.server.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

OCTET = {"Content-Type": "application/octet-stream"}


def handmade(tensors, metadata, header_text=None):
    """Safetensors bytes by hand: 8-byte little-endian header length, JSON header, tensor bytes."""
    header: dict[str, object] = {}
    data = b""
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += b"\x01" * size
    header["__metadata__"] = metadata
    text = json.dumps(header).encode() if header_text is None else header_text
    return struct.pack("<Q", len(text)) + text + data


def upload_meta(agent_id, **fields):
    meta = {"format": "fedloom/1", "sha256": "0" * 64, "round": "1", "client_id": agent_id, "num_samples": "10"}
    return {**meta, **{k: str(v) for k, v in fields.items()}}


@pytest.fixture
def site(make_aggregator):
    """(client, aggregator, agent id, auth headers): round 1 is open and its one agent selected."""
    agg = make_aggregator(min_agents=1)
    token = agg.store.create_token("site-a")
    with TestClient(create_app(agg, background_tick=False), raise_server_exceptions=False) as client:
        answer = client.post("/v1/agents/register", json={"name": "site-a", "join_token": token}).json()
        yield client, agg, answer["agent_id"], {"Authorization": f"Bearer {answer['credential']}"}


def refused_with(client, agg, store, headers, body, status, code, *named):
    before = len(store.list_rejections(agg.run_id))
    response = client.post("/v1/updates", content=body, headers={**headers, **OCTET})
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == code
    for text in named:
        assert text in answer["detail"], answer["detail"]
    rejections = store.list_rejections(agg.run_id)
    assert len(rejections) == before + 1 and rejections[-1].code == code
    return answer


@pytest.mark.parametrize(
    ("dtype", "shape", "size"),
    [("BF16", [3], 6), ("F8_E4M3", [3], 3), ("F8_E5M2", [3], 3), ("F4", [2], 1), ("F6_E2M3", [4], 3)],
)
def test_an_unsupported_dtype_is_a_400_naming_tensor_and_dtype(site, store, dtype, shape, size):
    client, agg, agent_id, headers = site
    body = handmade([("w", "F32", [2, 3], 24), ("b", dtype, shape, size)], upload_meta(agent_id))
    refused_with(client, agg, store, headers, body, 400, "invalid_payload", "'b'", dtype)


def test_deeply_nested_json_header_and_metrics_are_400(site, store):
    client, agg, agent_id, headers = site
    deep = b"[" * 100_000 + b"]" * 100_000
    text = b'{"__metadata__": {"format": "fedloom/1"}, "x": ' + deep + b"}"
    refused_with(client, agg, store, headers, handmade([], {}, header_text=text), 400, "invalid_payload", "nested")
    weights = {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    nested = "[" * 30_000 + "]" * 30_000
    meta = upload_meta(agent_id, sha256=content_hash(weights), metrics='{"loss": ' + nested + "}")
    body = handmade([("b", "F32", [3], 12), ("w", "F32", [2, 3], 24)], meta)
    body = body[:-36] + weights["b"].tobytes() + weights["w"].tobytes()  # the real tensor bytes
    answer = refused_with(client, agg, store, headers, body, 400, "invalid_payload", "metrics")
    assert "nested" in answer["detail"]
    # nothing else changed: the honest upload still goes through
    response = client.post("/v1/updates", content=payload(agent_id, 1), headers={**headers, **OCTET})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["²", "\u0661", "\U0001d7d9", "1" * 5000, "-1", "+1", " 1", "1.0"])
def test_odd_round_paths_are_404_not_500(site, path):
    client, _, _, headers = site
    response = client.get(f"/v1/models/global/{path}", headers=headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"
    assert client.get("/v1/models/global/1", headers=headers).status_code == 200


def test_a_bf16_initial_model_file_is_a_config_error_naming_file_tensor_and_dtype(tmp_path, store):
    for name, meta in (("plain.safetensors", {}), ("tagged.safetensors", upload_meta("", round=-1))):
        path = tmp_path / name
        path.write_bytes(handmade([("w", "F32", [2], 8), ("emb.weight", "BF16", [2, 2], 8)], meta))
        with pytest.raises(ConfigError) as info:
            load_initial_model(path)
        text = str(info.value)
        assert str(path) in text and "'emb.weight'" in text and "BF16" in text
        with pytest.raises(ConfigError, match="BF16"):
            Aggregator(config(initial_model=str(path)), store, initial_weights=None)
