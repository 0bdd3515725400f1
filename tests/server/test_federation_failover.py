"""Two real aggregators (uvicorn in threads) of one federation on one store, agents in threads: the
agents split by rendezvous hashing; when one aggregator stops, its agents move to the other, register
there with the same join token and train on its model; nothing is counted twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator_helpers import INIT, config
from live_server import serving

from federation_check import check_semi_global
from fedloom.client.agent import Agent
from fedloom.client.aggregator_choice import AggregatorFailover, rendezvous_order
from fedloom.client.transport import AggregatorClient, RetryPolicy
from fedloom.core import FitResult
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app


class SlowPlusOne:
    """Adds one to every tensor, slowly enough that a round takes a moment."""

    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        time.sleep(0.2)
        return FitResult({k: (v + 1).astype(v.dtype) for k, v in weights.items()}, 10, {"loss": 0.5})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def names_preferring(urls: list[str], each: int) -> dict[str, str]:
    """``each`` agent names per aggregator, keyed by name -> first-choice URL."""
    chosen: dict[str, str] = {}
    for i in range(1000):
        name = f"site-{i}"
        first = rendezvous_order(name, urls)[0]
        if sum(1 for u in chosen.values() if u == first) < each:
            chosen[name] = first
        if len(chosen) == each * len(urls):
            return chosen
    raise AssertionError("no spread of names found")


def wait_until(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_agents_of_a_stopped_aggregator_continue_on_the_other(store, tmp_path: Path) -> None:
    clusters = ("a1", "a2")
    fed = {"name": "fed", "clusters": clusters, "deadline_seconds": 30.0}
    a1 = Aggregator(config(cluster="a1", min_agents=2, max_rounds=20, **fed), store, initial_weights=INIT)
    a2 = Aggregator(config(cluster="a2", min_agents=4, max_rounds=2, **fed), store, initial_weights=INIT)
    app1, app2 = create_app(a1), create_app(a2)
    with serving(app1) as url1, serving(app2) as url2:
        agents = names_preferring([url1, url2], each=2)
        tokens = {name: store.create_token(name) for name in agents}
        outcomes: dict[str, str] = {}

        def one(name: str) -> None:
            @contextmanager
            def session(url: str, state_dir: Path) -> Iterator[Agent]:
                retry = RetryPolicy(base_delay=0.05, max_delay=0.2, max_attempts=3)
                with AggregatorClient(url, timeout=10, retry=retry) as client:
                    yield Agent(client, SlowPlusOne, state_dir, name, tokens[name], poll_wait=0.5, handle_signals=False)

            outcomes[name] = AggregatorFailover(name, [url1, url2], tmp_path / name, session).run()

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in agents]
        for thread in threads:
            thread.start()
        wait_until(lambda: store.cluster_model(a1.run_id, 1) is not None, 20, "a1's first round")
        app1.state.test_server.should_exit = True  # a1 goes away; a2 still waits for its fourth agent
        for thread in threads:
            thread.join(60)
    assert outcomes == dict.fromkeys(agents, "finished")
    movers = sorted(n for n, url in agents.items() if url == url1)
    # a2 ran both its rounds with all four agents: its own two and a1's two, registered with the same tokens
    a2_names = {a.id: a.name for a in store.list_agents(a2.run_id)}
    for round_no in (1, 2):
        assert sorted(a2_names[m.client_id] for m in store.list_local_models(a2.run_id, round_no)) == sorted(agents)
    # every closed round of each cluster counts its own local models once, in its cluster model
    for agg in (a1, a2):
        for record in store.list_rounds(agg.run_id):
            locals_ = store.list_local_models(agg.run_id, record.round)
            cluster = store.cluster_model(agg.run_id, record.round)
            if record.status == "closed":
                assert cluster is not None and cluster.num_samples == record.num_samples == 10 * len(locals_)
            else:  # the round a1 was in when it stopped: its uploads are a1's, in no cluster model
                assert cluster is None and agg is a1
    a1_names = {a.name for a in store.list_agents(a1.run_id)}
    assert a1_names == set(movers)
    for round_no in (1, 2):  # a2's semi-global models mixed in a1's newest cluster model, by the formula
        check_semi_global(store, a2.run_id, round_no)
        assert [p.cluster for p in store.cluster_model(a2.run_id, round_no).peers] == ["a1"]
