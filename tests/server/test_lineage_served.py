"""Issue 11, lineage in deployment: the aggregator serves each global model's lineage entry
(``GET /v1/lineage/{round}``) and real agents over real sockets verify every model they
receive against it; an agent refuses a model whose stored record was altered."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest
from aggregator_helpers import INIT, config
from live_server import serving

from fedloom.client.agent import Agent
from fedloom.client.lineage_check import LineageError
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app


class PlusOne:
    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        return FitResult({k: (v + 1).astype(v.dtype) for k, v in weights.items()}, 10, {"loss": 0.5})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def run_agents(url, store, tmp_path, names, *, restart=False, **kwargs):
    errors: list[BaseException] = []

    def one(name):
        token = None if restart else store.create_token(name)  # a restart keeps its credential
        with AggregatorClient(url, timeout=10) as client:
            agent = Agent(client, PlusOne, tmp_path / name, name, token, poll_wait=0.5, handle_signals=False, **kwargs)
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


def head_of(tmp_path, name):
    return json.loads((tmp_path / name / "lineage.json").read_text())["head"]


def test_agents_verify_every_global_model_and_hold_the_last_link(store, tmp_path):
    agg = Aggregator(config(min_agents=2, max_rounds=3, linger_seconds=0.0), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, ["site-a", "site-b"]) == []
    report = store.verify_lineage(agg.run_id)
    assert report.ok and report.checked == 4  # the initial model and three rounds
    for name in ("site-a", "site-b"):
        assert head_of(tmp_path, name) == {"run_id": agg.run_id, "round": 3, "link": report.last_link}
    entry = agg.lineage_entry(2)  # the model that starts round 2 = global model 1
    ids = {a.id for a in store.list_agents(agg.run_id)}
    assert entry.round == 1 and {c for c, _s, _n in entry.inputs} == ids
    assert entry.recomputed_link() == entry.link


def test_an_agent_refuses_a_model_whose_record_was_altered(store, tmp_path):
    agg = Aggregator(config(min_agents=1, max_rounds=2, linger_seconds=0.0), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, ["site-a"]) == []
        # someone with write access changes the sample count of the last round's local model
        db = tmp_path / "home" / "fedloom.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("UPDATE local_models SET num_samples = 11 WHERE round = 2").rowcount == 1
        (tmp_path / "site-a" / "global.safetensors").unlink()  # the restart downloads the final model again
        errors = run_agents(url, store, tmp_path, ["site-a"], restart=True)
        assert run_agents(url, store, tmp_path, ["site-a"], restart=True, verify_lineage=False) == []
    assert len(errors) == 1 and isinstance(errors[0], LineageError)
    assert "global model 2: its fields hash to" in str(errors[0])


def test_the_lineage_endpoint_needs_a_credential_and_a_known_round(store, tmp_path):
    agg = Aggregator(config(min_agents=1, max_rounds=1), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert httpx.get(f"{url}/v1/lineage/1").status_code == 401
        token = store.create_token("site-a")
        with AggregatorClient(url, timeout=10) as client:
            client.register("site-a", token)
            assert client.lineage(1).round == 0
            with pytest.raises(Exception, match="not_found"):
                client.lineage(7)
            with pytest.raises(Exception, match="not_found"):
                client.lineage("x1")


def test_the_final_check_is_fetched_before_the_aggregator_exits(store, tmp_path):
    """``fedloom server`` exits once every agent downloaded the final model: an agent that asked
    for the final model's lineage only after that download could find no aggregator and retried
    for minutes (seen in CI). Each agent now asks for the final lineage before the final download."""
    agg = Aggregator(config(min_agents=2, max_rounds=2, linger_seconds=600.0), store, initial_weights=INIT)
    app = create_app(agg, on_done=lambda: setattr(app.state.test_server, "should_exit", True))
    with serving(app) as url:
        started = time.monotonic()
        agents, calls = run_agents_stoppable(url, store, tmp_path, ["site-a", "site-b"], join=20)
        assert [a.state.phase.value for a in agents] == ["finished", "finished"]
        assert time.monotonic() - started < 20
    for name in ("site-a", "site-b"):
        assert calls[name][-2:] == [("lineage", "latest"), ("download_global", "latest")]
    report = store.verify_lineage(agg.run_id)
    for name in ("site-a", "site-b"):
        assert head_of(tmp_path, name)["round"] == 2 and head_of(tmp_path, name)["link"] == report.last_link


def run_agents_stoppable(url, store, tmp_path, names, *, join):
    """Run agents in threads, recording each one's model and lineage requests; any still running
    after ``join`` seconds is stopped (not left retrying)."""
    agents, threads, calls = [], [], {}
    for name in names:
        client = AggregatorClient(url, timeout=10)
        calls[name] = record_calls(client, ("lineage", "download_global"))
        token = store.create_token(name)
        agent = Agent(client, PlusOne, tmp_path / name, name, token, poll_wait=0.5, handle_signals=False)
        agents.append(agent)
        threads.append(threading.Thread(target=agent.run, daemon=True))
    for thread in threads:
        thread.start()
    end = time.monotonic() + join
    for agent, thread in zip(agents, threads, strict=True):
        thread.join(max(0.0, end - time.monotonic()))
        if thread.is_alive():
            agent.stop()
            thread.join(10)
        agent.client.close()
    return agents, calls


def record_calls(client, methods):
    calls = []
    for method in methods:
        real = getattr(client, method)

        def recorded(source, *args, _real=real, _method=method, **kwargs):
            calls.append((_method, source))
            return _real(source, *args, **kwargs)

        setattr(client, method, recorded)
    return calls
