"""Issue 11, secure aggregation in deployment, end to end: a real ``fedloom server`` with
``[secagg]`` and four real ``fedloom agent`` processes; one agent is SIGKILLed while the
round is in its masked-input stage. The run finishes, the killed agent's round is the
FedAvg of the three survivors (its pairwise masks rebuilt from its neighbours' key
shares), later rounds go on without it, and ``fedloom models verify`` passes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST_LEARNING, SLOW_SITE, Cluster, wait_until
from fedloom.cli.children import fedloom_command
from fedloom.server.config import AggregatorConfig
from fedloom.server.run_setup import deployment_strategy

pytest.importorskip("cryptography")

CLIP, BITS = 100.0, 30
SECURE = {
    "secure_aggregation": "on",
    "secagg_threshold": 2,
    "stage_timeout_seconds": 4,
    "clip_range": CLIP,
    "bits": BITS,
}


def survivors_fedavg(cluster: Cluster, settings: dict, round: int, names: list[str]) -> dict[str, np.ndarray]:
    """The FedAvg of ``names``' local models for ``round``, trained again here from the stored global model."""
    sys.path.insert(0, str(SLOW_SITE.parent))
    from slow_site import make_trainer

    config = AggregatorConfig().replace(**settings)
    strategy = deployment_strategy(config)
    start = cluster.query(lambda s, r: s.load_global_model(r, round - 1))
    ids = cluster.query(lambda s, r: {a.name: a.id for a in s.list_agents(r)})
    total, sums = 0, {k: np.zeros(v.shape, np.float64) for k, v in start.items()}
    for name in names:
        fit = strategy.client.fit_config(round, ids[name], config.run.seed)
        result = make_trainer(name.removeprefix("site-"), "4").fit(start, fit)
        total += result.num_samples
        for key in sums:
            sums[key] += np.asarray(result.weights[key], np.float64) * result.num_samples
    return {k: (v / total).astype(start[k].dtype) for k, v in sums.items()}


def test_an_agent_killed_mid_protocol_leaves_fedavg_of_the_survivors(cluster: Cluster) -> None:
    settings = {"max_rounds": 3, "min_agents": 4, "deadline_seconds": 8, **FAST_LEARNING, **SECURE}
    cluster.start_server(**settings)
    names = [f"site-{i}" for i in range(4)]
    tokens = cluster.tokens(*names, admin="site-0")
    agents = [cluster.start_agent(n, i, 4, tokens[n], upload_initial=i == 0) for i, n in enumerate(names[:3])]
    victim = cluster.start_agent("site-3", 3, 4, tokens["site-3"], delay=3.0)  # still training when killed
    credential = wait_until(lambda: cluster.credential("site-0"), 60, "site-0 to register")
    wait_until(
        lambda: (s := cluster.status(credential))["round"] == 2 and s["secagg_stage"] == "collect",
        90,
        "round 2 to reach its masked-input stage",
        interval=0.02,
    )
    victim.kill()  # SIGKILL: its shares are out, its masked input never comes
    for agent in agents:
        assert cluster.wait_exit(agent, 120) == 0, agent.output()[-3000:]
    assert cluster.query(lambda s, r: s.get_run(r).status) == "finished"
    assert cluster.global_rounds() == [0, 1, 2, 3]
    ids = cluster.query(lambda s, r: {a.id: a.name for a in s.list_agents(r)})
    contributors = cluster.query(
        lambda s, r: {x: sorted(ids[m.client_id] for m in s.list_local_models(r, x)) for x in (1, 2, 3)}
    )
    assert contributors == {1: names, 2: names[:3], 3: names[:3]}
    dropped = cluster.query(
        lambda s, r: [(x.round, ids[x.client_id], x.reason) for x in s.list_rejections(r) if x.code == "secagg_dropped"]
    )
    assert (2, "site-3") in [(r, n) for r, n, _ in dropped]
    assert any(r == 2 and "stage 'collect'" in why for r, _n, why in dropped)
    got = cluster.query(lambda s, r: s.load_global_model(r, 2))
    want = survivors_fedavg(cluster, settings, 2, names[:3])
    step = CLIP / (2**BITS - 1)
    for key, value in want.items():
        assert np.max(np.abs(got[key].astype(np.float64) - value.astype(np.float64))) <= step + 1e-5, key
    run_id = cluster.run_id()
    verify = subprocess.run(
        fedloom_command("models", "verify", run_id, "--home", str(cluster.home)),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
