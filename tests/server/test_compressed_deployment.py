"""Issue 12, compressed updates in deployment: with ``[client] compression`` every agent encodes
its update (the error-feedback residual in its state directory), the aggregator decodes it
against the open round's global model, stores the plain local model with its wire size, and
refuses malformed compressed payloads like any other bad upload: recorded, nothing changed."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from aggregator_helpers import config, join
from live_server import serving

from fedloom.client.agent import Agent
from fedloom.client.compressed_upload import compressed_upload
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult, from_bytes, to_bytes
from fedloom.core.compression import CompressionSpec
from fedloom.core.compression_wire import HEADER_FIELD
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.app import create_app

#: the shapes real models have: a conv kernel, a float64 bias, a BatchNorm counter, a 0-d scale
INIT = {
    "conv.weight": np.zeros((4, 1, 3, 3), np.float32),
    "fc.bias": np.zeros(5, np.float64),
    "bn.num_batches_tracked": np.array(0, np.int64),
    "scale": np.array(1.0, np.float32),
}
STEP = 0.3


def stepped(weights):
    """What a site's training makes of ``weights``: every float entry moved by STEP (varying by
    entry, so int8 has something to round), the BatchNorm counter advanced by 5."""
    out = {}
    for name, value in weights.items():
        if value.dtype.kind == "f":
            ramp = np.linspace(0.5, 1.0, value.size).reshape(value.shape) if value.ndim else 1.0
            out[name] = np.asarray(value + STEP * ramp, dtype=value.dtype)
        else:
            out[name] = np.asarray(value + 5, dtype=value.dtype)
    return out


class SteppingSite:
    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        return FitResult(stepped(weights), 10, {"loss": 0.5})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def run_agents(url, store, tmp_path, names):
    errors: list[BaseException] = []

    def one(name):
        with AggregatorClient(url, timeout=10) as client:
            agent = Agent(client, SteppingSite, tmp_path / name, name, store.create_token(name), poll_wait=0.5)
            agent.handle_signals = False
            try:
                agent.run()
            except BaseException as exc:  # reported to the test below
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


@pytest.mark.parametrize("scheme", ["int8", "topk", "float16"])
def test_agents_send_compressed_updates_and_the_store_keeps_the_decoded_models(store, tmp_path, scheme):
    fields = {"compression": scheme, "compression_topk": 0.5, "min_agents": 2, "max_rounds": 3}
    agg = Aggregator(config(**fields, linger_seconds=0.0), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, ["site-a", "site-b"]) == []
    assert store.verify_lineage(agg.run_id).ok  # every agent's contribution hash is the decoded model's
    for round_no in (1, 2, 3):
        start = store.load_global_model(agg.run_id, round_no - 1)
        for record in store.list_local_models(agg.run_id, round_no):
            local = store.load_local_model(agg.run_id, round_no, record.client_id)
            assert local["bn.num_batches_tracked"].item() == start["bn.num_batches_tracked"].item() + 5  # exact
            assert {k: v.dtype for k, v in local.items()} == {k: v.dtype for k, v in INIT.items()}
            if scheme != "topk":  # top-k sends half of each tensor per round; the rest is owed
                for name in ("conv.weight", "fc.bias"):
                    assert np.abs(local[name] - stepped(start)[name]).max() <= STEP / 127 + 1e-3
            assert record.metrics["upload_wire_bytes"] < record.metrics["upload_tensor_bytes"] + 2000
        assert all(HEADER_FIELD not in r.metrics for r in store.list_local_models(agg.run_id, round_no))
    residuals = sorted(p.name for p in (tmp_path / "site-a" / "compression").iterdir())
    assert residuals  # the error-feedback residual is kept in the agent's state directory


def test_the_wire_bytes_are_a_quarter_under_int8(store, tmp_path):
    big = {"fc.weight": np.zeros((64, 64), np.float32)}
    agg = Aggregator(config(compression="int8", min_agents=1, max_rounds=1), store, initial_weights=big)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    agg.tick()
    local = {"fc.weight": np.full((64, 64), 0.01, np.float32)}
    body = compressed_upload(
        local, big, CompressionSpec("int8"), client_id=agent.id, state_dir=tmp_path, round=1, num_samples=3
    ).body
    assert agg.submit_update(agent, body) == 1
    record = store.list_local_models(agg.run_id, 1)[0]
    assert record.metrics["upload_tensor_bytes"] == 64 * 64 * 4
    assert record.metrics["upload_wire_bytes"] == len(body) < 64 * 64 * 4 / 3
    stored = store.load_local_model(agg.run_id, 1, agent.id)
    assert np.allclose(stored["fc.weight"], 0.01, atol=0.01 / 254 + 1e-9)


def hostile(agent_id, tmp_path, change):
    """A valid int8 upload for round 1 whose ``compression`` header is changed by ``change``."""
    local = {**INIT, "conv.weight": np.full((4, 1, 3, 3), 0.5, np.float32)}
    body = compressed_upload(
        local, INIT, CompressionSpec("int8"), client_id=agent_id, state_dir=tmp_path, round=1, num_samples=4
    ).body
    tensors, header = from_bytes(body)
    extra = dict(header.extra or {})
    spec = json.loads(extra[HEADER_FIELD])
    tensors = change(spec, tensors)
    extra[HEADER_FIELD] = json.dumps(spec)
    return to_bytes(tensors, round=1, client_id=agent_id, num_samples=4, extra=extra)


def _nan_scale(spec, tensors):
    spec["tensors"]["conv.weight"]["scale"] = float("nan")
    return tensors


def _wrong_scheme(spec, tensors):
    spec["scheme"] = "topk"
    return tensors


def _wrong_shape(spec, tensors):
    return {**tensors, "conv.weight": np.zeros((9, 4), np.int8)}


def _unknown_tensor(spec, tensors):
    spec["tensors"]["ghost"] = {"kind": "exact"}
    return {**tensors, "ghost": np.zeros(2, np.float32)}


@pytest.mark.parametrize("change", [_nan_scale, _wrong_scheme, _wrong_shape, _unknown_tensor])
def test_a_malformed_compressed_update_is_refused_recorded_and_changes_nothing(store, tmp_path, change):
    agg = Aggregator(config(compression="int8", min_agents=1, max_rounds=2), store, initial_weights=INIT)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    agg.tick()
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(agent, hostile(agent.id, tmp_path, change))
    assert (info.value.status, info.value.code) == (400, "invalid_payload")
    rejection = store.list_rejections(agg.run_id)[-1]
    assert rejection.code == "invalid_payload" and rejection.client_id == agent.id
    assert store.list_local_models(agg.run_id) == [] and agg.status()["received"] == 0
    good = compressed_upload(
        stepped(INIT),
        INIT,
        CompressionSpec("int8"),
        client_id=agent.id,
        state_dir=tmp_path / "good",
        round=1,
        num_samples=4,
    ).body
    assert agg.submit_update(agent, good) == 1  # the round is still open and takes a good one


def test_plain_and_compressed_uploads_are_refused_in_the_other_kind_of_run(store, tmp_path):
    agg = Aggregator(config(compression="float16", min_agents=1, max_rounds=2), store, initial_weights=INIT)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    agg.tick()
    plain = to_bytes(stepped(INIT), round=1, client_id=agent.id, num_samples=4)
    with pytest.raises(RequestRefusedError, match="no 'compression' header field"):
        agg.submit_update(agent, plain)
    task = agg.task_for(agent.id)  # what every agent is told to do
    assert task.config is not None and task.config["extra"]["compression"] == {
        "scheme": "float16",
        "topk_fraction": 0.01,
    }


def test_a_compressed_upload_to_a_plain_run_is_refused(make_aggregator, store, tmp_path):
    agg = make_aggregator(min_agents=1)
    agent = store.get_agent(join(agg, store, "site-a").agent_id)
    agg.tick()
    with pytest.raises(RequestRefusedError, match="this run does not use compression") as info:
        agg.submit_update(agent, hostile(agent.id, tmp_path, lambda spec, tensors: tensors))
    assert info.value.code == "invalid_payload"
    assert store.list_rejections(agg.run_id)[-1].code == "invalid_payload"


def test_compression_is_refused_where_it_cannot_work(store):
    with pytest.raises(ConfigError, match=r"compression = 'int8' needs \[run\] mode = 'sync'"):
        Aggregator(config(compression="int8", mode="async"), store, initial_weights=INIT)
    with pytest.raises(ConfigError, match="secure aggregation masks every update"):
        Aggregator(config(compression="topk", secure_aggregation="on"), store, initial_weights=INIT)
