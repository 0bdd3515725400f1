"""``fedloom sim --cohort auto|off|N``: the setting reaches the executor, is recorded, and is checked."""

import pytest

from fedloom.cli.main import main
from fedloom.core.errors import ConfigError
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import SequentialExecutor
from fedloom.sim.tasks import make_executor, simulate_config
from fedloom.store import SqlStore


def test_auto_is_the_default_and_reaches_the_sequential_executor():
    executor = make_executor(SimConfig(model="mlp"))
    assert isinstance(executor, SequentialExecutor) and executor.cohort == "auto"
    assert make_executor(SimConfig(cohort="off")).cohort == "off"
    assert make_executor(SimConfig(cohort="16")).cohort == 16


def test_a_bad_cohort_is_refused_before_any_work(capsys):
    with pytest.raises(ConfigError, match="cohort must be 'auto', 'off' or a positive number of clients, got '0'"):
        SimConfig(cohort="0")
    assert main(["sim", "--cohort", "many", "--no-store"]) != 0
    assert "cohort must be 'auto', 'off' or a positive number" in capsys.readouterr().err


@pytest.mark.torch
def test_sim_with_a_torch_model_trains_in_cohorts_and_records_the_setting(tmp_path, caplog):
    """The digits MLP in cohorts of 3 reaches the same accuracy as one by one (within float noise)."""
    caplog.set_level("INFO", logger="fedloom.sim.cohort")
    home = tmp_path / "home"
    common = ["sim", "--model", "mlp", "--clients", "6", "--rounds", "2", "--lr", "0.1"]
    assert main([*common, "--cohort", "3", "--home", str(home)]) == 0
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        assert run.config["cohort"] == "3"
    base = {"model": "mlp", "clients": 6, "rounds": 2, "lr": 0.1}
    cohort = simulate_config(SimConfig(**base, cohort="3")).history[-1].metrics["accuracy"]
    alone = simulate_config(SimConfig(**base, cohort="off")).history[-1].metrics["accuracy"]
    assert cohort == pytest.approx(alone, abs=1e-3)
    assert not [r for r in caplog.records if r.name == "fedloom.sim.cohort"]  # nothing fell back
