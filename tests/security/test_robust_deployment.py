"""A boosting attacker in a deployed federation: real aggregator and agent processes on digits.

Four honest sites and one site whose agent sends its update scaled by ``BOOST``
(``boosted_site.py``). Under FedAvg the attacker drags the global model away; with the
coordinate-wise median configured the model ends within a few points of an all-honest
federation. The three runs are measured side by side and the numbers asserted.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fedloom.cli.federation import Child, agent_command, agent_env, final_accuracy, start_aggregator, stop_all
from fedloom.store import SqlStore

BOOSTED_SITE = Path(__file__).resolve().parent / "boosted_site.py"
SITES = 5
ROUNDS = 4
#: the attacker's update is −BOOST times its honest one: a reversed, boosted step
BOOST = -20.0
SETTINGS: dict[str, Any] = {
    "max_rounds": ROUNDS,
    "min_agents": SITES,
    "deadline_seconds": 60,
    "check_interval_seconds": 0.2,
    "lr": 0.5,
    "epochs": 2,
    "batch_size": 16,
}
#: the median run may lose at most this much accuracy against the all-honest run
ROBUST_MARGIN = 0.05
#: ... and FedAvg under attack must lose at least this much (else the attack proves nothing)
FEDAVG_LOSS = 0.30


def _federation(home: Path, strategy: str, attacker: bool) -> float:
    """Run one federation to its end; the final global model's digits test accuracy."""
    home.mkdir()
    names = [f"site-{i}" for i in range(SITES)]
    store = SqlStore.open_default(home)
    try:
        tokens = {n: store.create_token(n, role="admin" if i == 0 else "agent") for i, n in enumerate(names)}
    finally:
        store.close()
    server, url = start_aggregator(home, settings={**SETTINGS, "strategy": strategy}, timeout=60)
    children: list[Child] = [server]
    try:
        for i, name in enumerate(names):
            boost = BOOST if attacker and i == SITES - 1 else 1.0
            args = {"site": str(i), "sites": str(SITES), "boost": f"{boost:g}"}
            argv = agent_command(url, name, home / name, BOOSTED_SITE, args, upload_initial=i == 0)
            children.insert(0, Child(name, argv, log_file=home / f"{name}.log", env=agent_env(tokens[name])))
        for agent in children[:-1]:
            try:
                code = agent.wait(120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{agent.name} still runs after 120 s:\n{agent.output()[-3000:]}")
            assert code == 0, f"{agent.name} exited with {code}:\n{agent.output()[-3000:]}"
    finally:
        stop_all(children, grace=5.0)
    round_no, accuracy = final_accuracy(home)
    assert round_no == ROUNDS
    return accuracy


@pytest.mark.slow
def test_median_resists_a_boosted_site_that_breaks_fedavg(tmp_path: Path) -> None:
    runs = {"honest": ("fedavg", False), "fedavg": ("fedavg", True), "median": ("median", True)}
    with ThreadPoolExecutor(len(runs)) as pool:  # side by side: they wait on processes, not on each other
        futures = {key: pool.submit(_federation, tmp_path / key, *run) for key, run in runs.items()}
        honest, fedavg, median = (futures[key].result() for key in runs)
    summary = f"all honest {honest:.3f}, FedAvg attacked {fedavg:.3f}, median attacked {median:.3f}"
    assert honest >= 0.85, summary
    assert median >= honest - ROBUST_MARGIN, summary
    assert fedavg <= honest - FEDAVG_LOSS, summary
