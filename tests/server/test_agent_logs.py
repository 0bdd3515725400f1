"""Issue 10, agents' logs at the aggregator: shipped by a real agent, stored, printed by
``fedloom logs``; bounded and scrubbed; refusals recorded; the agent never waits for them."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from aggregator_helpers import INIT, config
from live_server import serving

from fedloom.cli.main import main as fedloom_main
from fedloom.client.agent import Agent
from fedloom.client.log_shipper import LogShipper, shipping_logs
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app
from fedloom.store.agent_logs import DROPPED_LOGGER


class PlusOneLogging:
    """A trainer that logs (its own logger under ``fedloom``), including a secret it should not."""

    secret = ""

    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        logging.getLogger("fedloom.site").info("site fit round %d, db postgresql://u:hunter2@db/x", config.round)
        logging.getLogger("fedloom.site").warning("leaking %s and Authorization: Bearer abcdef123", self.secret)
        return FitResult({k: v + 1 for k, v in weights.items()}, 10, {"loss": 0.5})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def run_agent(store, tmp_path, *, refuse_logs=False):
    agg = Aggregator(config(min_agents=1, max_rounds=2, linger_seconds=0.0), store, initial_weights=INIT)
    token = store.create_token("site-a")
    PlusOneLogging.secret = token
    app = create_app(agg)
    if refuse_logs:
        app.state.log_limiter.spend = lambda key: False
    with serving(app) as url, AggregatorClient(url, timeout=10) as client:
        agent = Agent(client, PlusOneLogging, tmp_path / "agent", "site-a", token, poll_wait=0.5, handle_signals=False)
        with shipping_logs(client, token) as shipper:
            agent.run()
            credential = client._credential
    return agg, token, credential, shipper


def test_a_real_agents_logs_reach_the_store_and_fedloom_logs_prints_them(store, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="fedloom")  # what `fedloom agent` sets (its --log-level)
    agg, token, credential, shipper = run_agent(store, tmp_path)
    records = store.agent_logs(agg.run_id, agent="site-a")
    messages = [r.message for r in records]
    assert any("site fit round 1" in m for m in messages) and any("site fit round 2" in m for m in messages)
    assert any("upload ok" in m for m in messages)  # the runtime's own lines too
    assert shipper.dropped == 0 and shipper.sent == len(records)
    stored = "\n".join(messages)
    assert token not in stored and credential not in stored and "hunter2" not in stored and "abcdef123" not in stored
    assert fedloom_main(["logs", "--home", str(store.home), "--agent", "site-a", "--level", "warning"]) == 0
    printed = capsys.readouterr().out
    assert "site-a WARNING fedloom.site: leaking ***" in printed and "site fit round" not in printed
    assert token not in printed and credential not in printed
    assert fedloom_main(["logs", "--home", str(store.home), "--agent", "nobody"]) == 0
    assert capsys.readouterr().out == ""


def test_the_agent_keeps_training_when_its_logs_are_refused(store, tmp_path):
    agg, _, _, shipper = run_agent(store, tmp_path, refuse_logs=True)
    assert agg.status()["rounds_completed"] == 2
    assert shipper.sent == 0 and shipper.dropped > 0
    assert not store.agent_logs(agg.run_id)
    assert {r.code for r in store.list_rejections(agg.run_id)} == {"rate_limited"}


def test_a_down_aggregator_or_a_full_queue_drops_and_counts_never_blocks():
    calls = []

    def down(batch):
        calls.append(len(batch))
        raise httpx.ConnectError("connection refused")

    shipper = LogShipper(down, capacity=3, interval=60)
    record = logging.LogRecord("fedloom.x", logging.INFO, __file__, 1, "line %d", (1,), None)
    started = time.monotonic()
    for _ in range(10):
        shipper.emit(record)
    assert time.monotonic() - started < 0.5 and shipper.dropped == 7
    shipper.start().stop()  # ships what is queued at stop
    assert calls == [3] and shipper.dropped == 10 and shipper.sent == 0


def _agent_headers(url, store, name="site-a"):
    token = store.create_token(name)
    answer = httpx.post(f"{url}/v1/agents/register", json={"name": name, "join_token": token}, timeout=10).json()
    return {"Authorization": f"Bearer {answer['credential']}"}


def _record(**fields):
    return {"created_at": time.time(), "level": "INFO", "logger": "fedloom.agent", "message": "hello"} | fields


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"records": [_record() for _ in range(201)]}, 400, "at most 200"),
        ({"records": [_record(message="m" * 2001)]}, 400, "records[0].message"),
        ({"records": [_record(), _record(level="LOUD")]}, 400, "records[1].level"),
        ({"records": [_record(created_at=1.0)]}, 400, "check the agent's clock"),
        ({"records": [_record(created_at=float("nan"))]}, 400, "created_at"),
        ({"records": [_record(extra=1)]}, 400, "exactly created_at"),
        ({"records": [_record(logger="")]}, 400, "records[0].logger"),
        ({"logs": []}, 400, "JSON object"),
        ({"records": [_record(message="x" * 1900) for _ in range(40)]}, 413, "over the limit"),
    ],
)
def test_bad_batches_are_refused_with_a_recorded_reason(store, body, status, named):
    agg = Aggregator(config(min_agents=1), store, initial_weights=INIT)
    with serving(create_app(agg, background_tick=False)) as url:
        headers = _agent_headers(url, store)
        text = json.dumps(body).replace("NaN", "NaN")
        answer = httpx.post(f"{url}/v1/logs", content=text, headers=headers, timeout=10)
        assert answer.status_code == status and named in answer.json()["detail"]
        assert not store.agent_logs(agg.run_id)
        rejection = store.list_rejections(agg.run_id)[-1]
        assert named in rejection.reason and rejection.code == answer.json()["error"]
        ok = httpx.post(f"{url}/v1/logs", json={"records": [_record()]}, headers=headers, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"stored": 1}


def test_batches_are_rate_limited_per_agent_and_secrets_scrubbed_server_side(store):
    agg = Aggregator(config(min_agents=1), store, initial_weights=INIT)
    with serving(create_app(agg, background_tick=False)) as url:
        mine, other = _agent_headers(url, store), _agent_headers(url, store, "site-b")
        leaky = _record(message="join with flj_abcdefghijkl, password=pw123 at https://u:pw456@h/")
        answers = [
            httpx.post(f"{url}/v1/logs", json={"records": [leaky]}, headers=mine, timeout=10).status_code
            for _ in range(14)
        ]
        assert answers[:10] == [200] * 10 and 429 in answers[10:]
        assert httpx.post(f"{url}/v1/logs", json={"records": [_record()]}, headers=other, timeout=10).status_code == 200
    assert "rate_limited" in {r.code for r in store.list_rejections(agg.run_id)}
    stored = [r.message for r in store.agent_logs(agg.run_id, agent="site-a")]
    assert stored and all(m == "join with flj_***, password=*** at https://u:***@h/" for m in stored)


def test_the_stored_rows_per_agent_are_capped_with_one_dropped_marker(store):
    from datetime import UTC, datetime

    from fedloom.core.agent_logs import parse_log_batch

    run_id = store.create_run("capped", "deployment", {}, seed=0)
    entries = parse_log_batch({"records": [_record(message=f"m{i}") for i in range(4)]}, datetime.now(UTC))
    assert store.append_agent_logs(run_id, "site-a", entries, cap=6) == 4
    assert store.append_agent_logs(run_id, "site-a", entries, cap=6) == 2
    assert store.append_agent_logs(run_id, "site-a", entries, cap=6) == 0
    assert store.append_agent_logs(run_id, "site-b", entries, cap=6) == 4  # per agent
    rows = store.agent_logs(run_id, agent="site-a")
    assert len(rows) == 7 and rows[-1].logger == DROPPED_LOGGER and rows[-1].level == "WARNING"
    assert rows[-1].message.startswith("dropped 6 records")
    page = store.agent_logs(run_id, agent="site-a", after_id=rows[2].id, limit=2)
    assert [r.message for r in page] == ["m3", "m0"]
