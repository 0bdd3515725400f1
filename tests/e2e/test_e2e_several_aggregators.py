"""Several aggregators, one federation, as real processes: three ``fedloom server`` processes share one
real PostgreSQL database and one real S3 bucket (moto); six ``fedloom agent`` processes, each given all
three URLs, spread over them by rendezvous hashing. One aggregator is SIGKILLed mid-run; its agents move
to their next choice and go on there; the other two finish. Every recorded semi-global model is checked
against the formula from the store's cluster models, and the per-round sample counts show that nothing
was lost or counted twice."""

from __future__ import annotations

import importlib.util
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import FAST_LEARNING, SLOW_SITE, Cluster, digits_weights, wait_until
from federation_check import check_semi_global
from fedloom.cli.federation import RUN_KIND, Child, agent_command, agent_env, start_aggregator
from fedloom.client.aggregator_choice import rendezvous_order
from fedloom.core import to_bytes
from fedloom.store import SqlStore
from fedloom.store.blob_urls import blob_store_from_url

_PG = Path(__file__).resolve().parents[1] / "store" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_fedloom_postgres_fixture", _PG)
assert _spec is not None and _spec.loader is not None
_postgres = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_postgres)
postgres_url = _postgres.postgres_url  # the real PostgreSQL server of tests/store/conftest.py

CLUSTERS = ("a1", "a2", "a3")
ROUNDS = 5
STALENESS = 2


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _two_names_each(urls: list[str]) -> dict[str, str]:
    """Six agent names, two whose first choice is each aggregator: name -> that URL."""
    chosen: dict[str, str] = {}
    for i in range(1000):
        first = rendezvous_order(f"site-{i}", urls)[0]
        if sum(u == first for u in chosen.values()) < 2:
            chosen[f"site-{i}"] = first
    return dict(list(chosen.items())[:6]) if len(chosen) >= 6 else pytest.fail("no spread of names")


def _empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def test_three_aggregators_one_killed_its_agents_go_on_elsewhere(
    cluster: Cluster, postgres_url: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    started = time.monotonic()
    monkeypatch.setenv("FEDLOOM_S3_ENDPOINT", s3_endpoint)  # every process inherits it and the AWS_* credentials
    _empty(postgres_url)
    blob_url = f"s3://{s3_bucket}/fed"
    store = SqlStore(postgres_url, blobs=blob_store_from_url(blob_url))
    initial = tmp_path / "initial.safetensors"
    initial.write_bytes(to_bytes(digits_weights()))
    ports = _free_ports(3)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    agents = _two_names_each(urls)
    tokens = {name: store.create_token(name) for name in agents}  # one token per site, good on every aggregator
    servers: dict[str, Child] = {}
    for cluster_id, port in zip(CLUSTERS, ports, strict=True):
        home = cluster.home / cluster_id
        home.mkdir()
        settings = {
            "db_url": postgres_url, "blob_url": blob_url, "name": "fed", "cluster": cluster_id,
            "clusters": ",".join(CLUSTERS), "max_staleness_rounds": STALENESS, "initial_model": initial,
            "max_rounds": ROUNDS, "min_agents": 2, "deadline_seconds": 60, "check_interval_seconds": 0.2,
            "linger_seconds": 30, **FAST_LEARNING,
        }  # fmt: skip
        server, _ = start_aggregator(home, port=port, settings=settings, timeout=60)
        servers[cluster_id] = server
        cluster.children.append(server)
    for i, name in enumerate(agents):
        others = [a for u in urls if u != urls[0] for a in ("--server", u)]
        argv = agent_command(
            urls[0], name, cluster.home / "agents" / name, SLOW_SITE, {"site": str(i), "sites": "6", "delay": "0.7"},
            poll_wait=2.0, extra_args=(*others, "--max-retries", "1"),
        )  # fmt: skip
        cluster.children.insert(
            0, Child(name, argv, log_file=cluster.home / f"{name}.log", env=agent_env(tokens[name]))
        )

    def run_of(cluster_id: str) -> str:
        found = store.find_run(f"fed.{cluster_id}", kind=RUN_KIND)
        assert found is not None
        return found.id

    wait_until(lambda: store.find_run("fed.a1", kind=RUN_KIND) and store.cluster_model(run_of("a1"), 1), 60,
               "a1's first round")  # fmt: skip
    servers["a1"].kill()  # SIGKILL, mid-run: no goodbye, no interrupted mark
    killed_at = max(m.round for m in store.list_global_models(run_of("a1")))
    for child in cluster.children:
        if child is not servers["a1"]:
            assert cluster.wait_exit(child, 100 - (time.monotonic() - started)) == 0, child.output()[-4000:]

    runs = {c: run_of(c) for c in CLUSTERS}
    assert store.get_run(runs["a1"]).status == "running"  # killed: nobody marked it
    names = {c: {a.id: a.name for a in store.list_agents(runs[c])} for c in CLUSTERS}
    movers = {n for n, u in agents.items() if u == urls[0]}
    assert set(names["a1"].values()) == movers
    for c in ("a2", "a3"):
        assert store.get_run(runs[c]).status == "finished"
        assert [m.round for m in store.list_global_models(runs[c])] == list(range(ROUNDS + 1))
    # each agent of a1 went on at its second choice and trained there
    for name in movers:
        second = CLUSTERS[urls.index(rendezvous_order(name, urls)[1])]
        trained = [m for m in store.list_local_models(runs[second]) if names[second][m.client_id or ""] == name]
        assert trained, f"{name} never trained on {second}"
    # nothing lost or counted twice: a closed round counts exactly its own local models, once, in its cluster model
    for c in CLUSTERS:
        for record in store.list_rounds(runs[c]):
            locals_ = store.list_local_models(runs[c], record.round)
            cluster_model = store.cluster_model(runs[c], record.round)
            if record.status == "closed":
                assert cluster_model is not None, (c, record.round)
                assert cluster_model.num_samples == record.num_samples == sum(m.num_samples for m in locals_)
                assert record.num_updates == len(locals_) == len({m.client_id for m in locals_})
                check_semi_global(store, runs[c], record.round)  # S = Σ n_k C_k / Σ n_k, from the records
            else:  # a1's round in flight when it was killed: its uploads are a1's and nobody else's
                assert (c, record.status) == ("a1", "open")
                if cluster_model is not None:  # killed after recording its cluster model: the round counts, once
                    assert cluster_model.num_samples == sum(m.num_samples for m in locals_)
            for peer in cluster_model.peers if cluster_model else ():
                assert 0 <= record.round - peer.round <= STALENESS  # never ahead, never too stale
    final_peers = {c: [p.cluster for p in store.cluster_model(runs[c], ROUNDS).peers] for c in ("a2", "a3")}
    if ROUNDS - killed_at > STALENESS:  # a1's last model has gone stale by the end
        assert final_peers == {"a2": ["a3"], "a3": ["a2"]}
    store.close()
    assert time.monotonic() - started < 120
