"""``fedloom sim --secagg``: the flags reach the protocol, the run matches the plain one within
the bound, and wrong combinations are refused naming the flag."""

import numpy as np

from fedloom.algorithms.secagg.ring import error_bound
from fedloom.cli.main import main
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore


def test_sim_secagg_flags_are_recorded_and_dropouts_are_applied(tmp_path, capsys):
    home = tmp_path / "home"
    code = main(
        ["sim", "--clients", "8", "--rounds", "2", "--lr", "0.5", "--secagg", "--secagg-bits", "30",
         "--secagg-clip", "2", "--secagg-threshold", "3", "--secagg-neighbours", "4", "--threshold", "0.5",
         "--secagg-dropout", "collect=0.2", "--secagg-dropout", "share=0.1", "--home", str(home)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        recorded = run.config["secure_aggregation"]
        codes = {r.code for r in store.list_rejections(run.id)}
    assert recorded["bits"] == 30 and recorded["clip_range"] == 2.0 and recorded["threshold"] == 3
    assert recorded["neighbours"] == 4 and recorded["dropout"] == {"collect": 0.2, "share": 0.1}
    assert run.config["secagg"] is True
    assert "secagg_dropped" in codes


def test_a_secagg_logreg_run_equals_the_plain_run_within_the_bound():
    plain = simulate_config(SimConfig(clients=5, rounds=3, lr=0.5))
    secure = simulate_config(SimConfig(clients=5, rounds=3, lr=0.5, secagg=True, secagg_bits=32, secagg_clip=4.0))
    for name, value in plain.final_weights.items():
        diff = np.max(np.abs(secure.final_weights[name].astype(np.float64) - value))
        assert diff <= 50 * error_bound(4.0, 32) + 1e-7, name  # float32 rounding of the model on top


def test_secagg_refusals_name_the_flag(capsys):
    assert main(["sim", "--secagg", "--aggregator", "median", "--no-store"]) != 0
    assert "only the sum of the updates; aggregator 'median'" in capsys.readouterr().err
    assert main(["sim", "--secagg", "--mode", "fedbuff", "--no-store"]) != 0
    assert "synchronous" in capsys.readouterr().err
    assert main(["sim", "--secagg-dropout", "collect=0.1", "--no-store"]) != 0
    assert "add --secagg" in capsys.readouterr().err
    assert main(["sim", "--secagg", "--secagg-dropout", "collect", "--no-store"]) != 0
    assert "STAGE=P" in capsys.readouterr().err
    assert main(["sim", "--secagg", "--secagg-bits", "60", "--no-store"]) != 0
    assert "bits" in capsys.readouterr().err
