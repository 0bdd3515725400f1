"""``fedloom sim --dp-sgd``: every client trains with DP-SGD, its ε is stored per client per round (with
its local model's record) and the round's server-side value is the worst client's, not a mean."""

from __future__ import annotations

import json

import pytest

from fedloom.algorithms.privacy_accountant import Poisson, gaussian_epsilon
from fedloom.cli.main import main
from fedloom.client.dp_sgd import DELTA_METRIC, EPSILON_METRIC
from fedloom.sim.config import SimConfig
from fedloom.store import SqlStore

FLAGS = ["sim", "--dataset", "digits", "--clients", "3", "--rounds", "2", "--batch-size", "50", "--lr", "0.1",
         "--partition", "quantity"]  # fmt: skip
DP = ["--dp-sgd", "--dp-sgd-noise", "1.2", "--dp-sgd-clip", "0.8", "--dp-sgd-delta", "1e-6"]


@pytest.mark.parametrize("executor", ["sequential", "parallel"])
def test_sim_with_dp_sgd_stores_each_clients_epsilon_every_round(tmp_path, capsys, executor):
    home = tmp_path / "home"
    workers = ["--workers", "2"] if executor == "parallel" else []
    assert main([*FLAGS, "--model", "logreg-torch", *DP, "--executor", executor, *workers, "--home", str(home)]) == 0
    config = SimConfig(dataset="digits", clients=3, model="logreg-torch")
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        local = store.list_local_models(run.id)
        worst = dict(store.metric_series(run.id, EPSILON_METRIC, scope="server"))
        assert run.config["dp_sgd"] is True and run.config["dp_sgd_noise"] == 1.2
    epsilons = {(m.round, m.client_id): m.metrics[EPSILON_METRIC] for m in local}
    assert set(epsilons) == {(r, c) for r in (1, 2) for c in ("0", "1", "2")}
    assert {m.metrics[DELTA_METRIC] for m in local} == {1e-6}
    assert worst == {r: max(v for (rr, _), v in epsilons.items() if rr == r) for r in (1, 2)}
    from fedloom.data import load_dataset
    from fedloom.sim.partition import partition

    data = load_dataset("digits")
    sizes = [len(p) for p in partition("quantity", data.train.y, 3, config.seed, alpha=config.alpha)]
    for (r, c), value in epsilons.items():
        n = sizes[int(c)]
        steps = r * -(-n // 50)  # ceil(n / B) Poisson steps per round (one epoch)
        assert value == pytest.approx(gaussian_epsilon(1.2, Poisson(min(1.0, 50 / n)), steps, 1e-6), rel=1e-12)
    assert epsilons[(2, "0")] > epsilons[(1, "0")]
    assert len({epsilons[(1, c)] for c in ("0", "1", "2")}) == 3  # unequal sizes: the max is not the mean
    assert "DP-SGD z=1.2 C=0.8 delta=1e-06" in capsys.readouterr().out
    assert main(["runs", "show", run.id[:8], "--home", str(home), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {r["round"]: r["metrics"][EPSILON_METRIC] for r in shown["rounds"]} == worst
    assert shown["sample_privacy"] == {"round": 2, "epsilon": max(worst.values()), "delta": 1e-6}
    assert main(["runs", "show", run.id[:8], "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert f"sample-level DP-SGD: epsilon = {max(worst.values()):.4g} at delta = 1e-06 after round 2" in text


def test_sim_with_dp_sgd_on_a_model_that_cannot_do_it_fails_naming_the_trainer(tmp_path, capsys):
    assert main([*FLAGS, "--model", "logreg", *DP, "--no-store"]) != 0
    assert "NumpyLogisticTrainer cannot" in capsys.readouterr().err
