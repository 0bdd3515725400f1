"""Issue 12, edge aggregators with real processes: one top ``fedloom server``, two ``fedloom edge``
processes, four ``fedloom-light`` devices (two per edge), beside a flat federation of the same four
devices on a second top. The global models of both tops agree (FedAvg, up to float rounding); one
edge is SIGKILLed mid-round (one of its devices' update stored, the other still training) and
restarted on the same home and port: it resumes that round with the stored update, the run
finishes, and nothing is counted twice (the top's sample total per round is the leaves' sum, each
edge stores exactly one update per device per round, the top one per edge per round)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until
from fedloom.cli.children import Child, agent_env, fedloom_command, stop_all
from fedloom.cli.federation import start_aggregator, wait_for_port
from fedloom.core import to_bytes
from fedloom.store import SqlStore

LIGHT_SITE = Path(__file__).resolve().parents[1] / "light" / "light_site.py"
sys.path.insert(0, str(LIGHT_SITE.parent))
from light_site import initial_model, site_data  # noqa: E402

ROUNDS = 3
LEARNING = {"lr": 0.5, "epochs": 2, "batch_size": 10_000}  # full batch: a round's result ignores the seed
SAMPLES = [len(site_data(s)[1]) for s in range(4)]
DELAYS = ["0", "0", "0.2", "2.5"]  # dev-3 trains slowly: the kill lands while it trains
FAST = {"check_interval_seconds": 0.2}


def open_store(home: Path) -> SqlStore:
    return SqlStore.open_default(home)


def tokens(home: Path, *names: str) -> dict[str, str]:
    with open_store(home) as store:
        return {name: store.create_token(name) for name in names}


def start_top(home: Path, agents: int, children: list[Child]) -> str:
    home.mkdir(parents=True)
    model = home / "initial.safetensors"
    model.write_bytes(to_bytes(initial_model()))
    settings = {"min_agents": agents, "max_rounds": ROUNDS, "initial_model": model, **LEARNING, **FAST}
    server, url = start_aggregator(home, settings=settings)
    children.append(server)
    return url


def start_device(url: str, home: Path, site: int, token: str | None, children: list[Child]) -> Child:
    argv = [
        sys.executable,
        "-m",
        "fedloom.light",
        "--server",
        url,
        "--name",
        f"dev-{site}",
        "--poll-wait",
        "1",
        "--state-dir",
        str(home / f"dev-{site}"),
        "--trainer",
        f"{LIGHT_SITE}:make_trainer",
        "--trainer-arg",
        f"site={site}",
        "--trainer-arg",
        f"delay={DELAYS[site]}",
    ]
    child = Child(f"dev-{site}", argv, log_file=home / f"dev-{site}.log", env=agent_env(token))
    children.insert(0, child)
    return child


def start_edge(top_url: str, home: Path, token: str, children: list[Child], port: int = 0) -> tuple[Child, int]:
    name = home.name
    argv = fedloom_command(
        "edge",
        "--upstream",
        top_url,
        "--home",
        str(home),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--min-agents",
        "2",
        "--agent-name",
        name,
        "--poll-wait",
        "1",
        "--check-interval-seconds",
        "0.2",
        "--linger-seconds",
        "30",
    )
    (home / "aggregator.port").unlink(missing_ok=True)
    child = Child(name, argv, log_file=home / "edge.log", env=agent_env(token))
    children.insert(0, child)
    return child, wait_for_port(home, child, 60)


def downstream_run(home: Path) -> str:
    with open_store(home) as store:
        run = store.find_run("default", kind="deployment")
        assert run is not None
        return run.id


def stored_updates(home: Path, round: int) -> list[int]:
    """The sample counts of the local models ``home``'s run stored for ``round``."""
    with open_store(home) as store:
        run = store.find_run("default", kind="deployment")
        return [] if run is None else sorted(m.num_samples for m in store.list_local_models(run.id, round=round))


def global_models(home: Path) -> list[dict[str, np.ndarray]]:
    with open_store(home) as store:
        run = store.find_run("default", kind="deployment")
        assert run is not None
        return [store.load_global_model(run.id, m.round) for m in store.list_global_models(run.id)]


@pytest.mark.slow
def test_two_edges_four_light_devices_equal_flat_and_a_killed_edge_resumes(tmp_path):
    children: list[Child] = []
    try:
        flat_url = start_top(tmp_path / "flat", 4, children)
        flat_tokens = tokens(tmp_path / "flat", *(f"dev-{s}" for s in range(4)))
        for s in range(4):
            start_device(flat_url, tmp_path / "flat", s, flat_tokens[f"dev-{s}"], children)

        top_url = start_top(tmp_path / "top", 2, children)
        edge_tokens = tokens(tmp_path / "top", "edge-0", "edge-1")
        edges, devices = {}, []
        for e in range(2):
            home = tmp_path / f"edge-{e}"
            home.mkdir()
            leaf_tokens = tokens(home, f"dev-{2 * e}", f"dev-{2 * e + 1}")
            edges[e] = start_edge(top_url, home, edge_tokens[f"edge-{e}"], children)
            url = f"http://127.0.0.1:{edges[e][1]}"
            devices += [start_device(url, home, s, leaf_tokens[f"dev-{s}"], children) for s in (2 * e, 2 * e + 1)]

        # SIGKILL edge-1 in round 2 once dev-2's update is stored and dev-3 is still training
        edge1_home = tmp_path / "edge-1"
        wait_until(lambda: stored_updates(edge1_home, 2) == [SAMPLES[2]], 60, "dev-2's round-2 update at edge-1")
        killed, port = edges[1]
        killed.kill()  # SIGKILL of its process group: no shutdown code runs
        run_before = downstream_run(edge1_home)
        time.sleep(0.5)
        restarted, again = start_edge(top_url, edge1_home, edge_tokens["edge-1"], children, port=port)
        assert again == port

        for child in [*devices, restarted, edges[0][0], *children]:
            if child is not killed:
                assert child.wait(80) == 0, f"{child.name} failed:\n{child.output()[-3000:]}"
    finally:
        stop_all(children, grace=5.0)

    assert "round 2: resumed with 1 update(s) already received" in restarted.output()
    assert downstream_run(edge1_home) == run_before  # the same downstream run, resumed
    flat, top = global_models(tmp_path / "flat"), global_models(tmp_path / "top")
    assert len(flat) == len(top) == ROUNDS + 1
    for r in range(1, ROUNDS + 1):
        for name in flat[r]:
            np.testing.assert_allclose(top[r][name], flat[r][name], rtol=1e-6, atol=1e-6)
        assert stored_updates(tmp_path / "top", r) == [SAMPLES[0] + SAMPLES[1], SAMPLES[2] + SAMPLES[3]]
        assert stored_updates(tmp_path / "edge-0", r) == SAMPLES[:2]
        assert stored_updates(edge1_home, r) == SAMPLES[2:]  # no update lost or counted twice by the kill
    with open_store(tmp_path / "top") as store:
        run = store.find_run("default", kind="deployment")
        assert [x.num_samples for x in store.list_rounds(run.id)] == [sum(SAMPLES)] * ROUNDS
        assert run.status == "finished"
    assert not np.allclose(top[-1]["weight"], 0.0)
