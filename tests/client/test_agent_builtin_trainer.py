"""``fedloom agent --data KIND:PATH --model NAME``: a deployed site with no Python of its own."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedloom.cli import agent as agent_cli
from fedloom.cli.agent_data import builtin_trainer_factory, trainer_factory
from fedloom.cli.main import main
from fedloom.client.transport import AggregatorClient
from fedloom.core.errors import ConfigError
from fedloom.data import parse_data_spec
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task

LEVELS = ("blue", "green", "red")
DEPLOYED = ("--target", "outcome", "--classes", "no,yes", "--categorical", "colour")
DEPLOYED += ("--categories", "colour=blue,green,red")


def _fake_module() -> Any:
    """tests/client/test_agent.py (its fake aggregator), imported by path: tests are not a package."""
    spec = importlib.util.spec_from_file_location("_agent_tests_for_data", Path(__file__).with_name("test_agent.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_fakes = _fake_module()


def write_site(path: Path, rows: int, seed: int, *, levels: tuple[str, ...] = LEVELS, sites: int = 0) -> Path:
    """A site's table: two numeric columns, a colour drawn from ``levels``, a yes/no outcome; with
    ``sites``, a union of that many sites with a ``site`` column."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "dose", "colour", "outcome", *(["site"] if sites else [])])
        for row in range(rows):
            age, dose = rng.normal(size=2)
            colour = levels[int(rng.integers(len(levels)))]
            outcome = "yes" if age + 0.5 * dose + (colour == "red") > 0.3 else "no"
            site = [f"s{row % sites}"] if sites else []
            writer.writerow([f"{40 + 10 * age:.3f}", f"{dose:.4f}", colour, outcome, *site])
    return path


def agent(*argv: str) -> int:
    return main(["agent", "--server", "http://agg.test", "--name", "s", "--token", "flj_x", *argv])


def test_trainer_or_data_exactly_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = write_site(tmp_path / "site.csv", 20, 0)
    assert agent() == 1
    assert "needs --trainer SPEC (the site's own factory) or --data KIND:PATH" in capsys.readouterr().err
    assert agent("--trainer", "x:y", "--data", f"table:{site}", *DEPLOYED) == 1
    assert "not both" in capsys.readouterr().err


def test_builtin_flags_are_refused_beside_a_trainer(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent("--trainer", "x:y", "--model", "mlp", "--seed", "3") == 1
    assert "--model, --seed: only the built-in trainer (--data) reads these" in capsys.readouterr().err
    assert agent("--data", "table:x.csv", "--target", "outcome", "--trainer-arg", "a=1") == 1
    assert "--trainer-arg goes to a --trainer factory" in capsys.readouterr().err


def test_deployment_refuses_encodings_that_could_differ_between_sites(tmp_path: Path) -> None:
    site = str(write_site(tmp_path / "site.csv", 20, 0))
    spec = parse_data_spec(f"table:{site}", target="outcome")
    with pytest.raises(ConfigError, match=r"--classes is needed.*column 'outcome'.*--classes no,yes"):
        builtin_trainer_factory(spec, SimConfig(model="logreg", seed=0))
    spec = parse_data_spec(f"table:{site}", target="outcome", classes=["no", "yes"], categorical=["colour"])
    with pytest.raises(ConfigError, match=r"colour have no fixed levels.*--categories colour=LEVEL,LEVEL"):
        builtin_trainer_factory(spec, SimConfig(model="logreg", seed=0))


def _site_trainer(path: Path, model: str, seed: int) -> Any:
    spec = parse_data_spec(
        f"table:{path}", target="outcome", classes=["no", "yes"], categorical=["colour"], categories={"colour": LEVELS}
    )
    return builtin_trainer_factory(spec, SimConfig(model=model, seed=seed))()


@pytest.mark.parametrize("model", ["logreg", "mlp-numpy", "mlp"])
def test_every_site_and_the_simulation_start_from_the_same_model(tmp_path: Path, model: str) -> None:
    """Sites with different local levels and labels build the same widths and, seeded alike, the same
    initial weights as ``fedloom sim --data`` on the union (the admin agent's --upload-initial model)."""
    if model == "mlp":
        pytest.importorskip("torch")
    one = write_site(tmp_path / "one.csv", 60, 1)
    two = write_site(tmp_path / "two.csv", 40, 2, levels=("blue",))  # never saw green or red
    first, second = _site_trainer(one, model, 7).get_weights(), _site_trainer(two, model, 7).get_weights()
    union = write_site(tmp_path / "union.csv", 90, 3, sites=2)
    data = {"kind": "table", "path": str(union), "target": "outcome", "classes": ["no", "yes"]}
    data |= {"categorical": ["colour"], "categories": {"colour": list(LEVELS)}}
    config = SimConfig(data=data, model=model, seed=7, partition="natural", partition_by="site")
    simulated = build_task(config).initial_weights
    assert sorted(first) == sorted(second) == sorted(simulated)
    for name in first:
        assert first[name].shape == second[name].shape == simulated[name].shape
        assert first[name].dtype == simulated[name].dtype
        np.testing.assert_array_equal(first[name], second[name])
        np.testing.assert_array_equal(first[name], simulated[name])
    if model != "logreg":  # logreg starts at zero whatever the seed
        other = _site_trainer(one, model, 8).get_weights()
        assert any(not np.array_equal(first[n], other[n]) for n in first)


def test_a_label_the_federation_did_not_list_is_refused_naming_it(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.csv", 30, 4)
    spec = parse_data_spec(
        f"table:{site}", target="outcome", classes=["yes"], categorical=["colour"], categories={"colour": LEVELS}
    )
    factory = builtin_trainer_factory(spec, SimConfig(model="logreg", seed=0))
    with pytest.raises(Exception, match=r"label 'no' is not one of the classes"):
        factory()


def test_a_site_runs_two_rounds_from_its_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    site = write_site(tmp_path / "site.csv", 100, 5)
    initial = _site_trainer(site, "mlp-numpy", 0).get_weights()
    fake = _fakes.FakeAggregator(initial, max_rounds=2)
    original = agent_cli.make_client

    def make_client(args: Any, **overrides: Any) -> AggregatorClient:
        return original(args, transport=httpx.MockTransport(fake.handle), **overrides)

    monkeypatch.setattr(agent_cli, "make_client", make_client)
    argv = ["agent", "--server", "http://agg.test", "--token", _fakes.SITE_TOKEN, "--name", "site-1"]
    argv += ["--data", f"table:{site}", *DEPLOYED, "--model", "mlp-numpy", "--poll-wait", "0"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert [a["round"] for a in fake.accepted] == [1, 2]
    assert {a["num_samples"] for a in fake.accepted} == {80}  # 100 rows less the default 20 % test split
    state = json.loads((tmp_path / "fedloom-agent-site-1" / "state.json").read_text())
    assert state["state"] == "finished"


def test_model_flags_are_the_simulations_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--hidden 16 --model mlp-numpy`` on a site builds what ``fedloom sim --hidden 16`` builds, and is
    refused with the simulation's own message where the model has no hidden layers."""
    site = write_site(tmp_path / "site.csv", 40, 6)
    parser = argparse.ArgumentParser(prog="fedloom")
    agent_cli.register(parser.add_subparsers(dest="command"))
    argv = ["agent", "--server", "http://agg.test", "--data", f"table:{site}", *DEPLOYED]
    args = parser.parse_args([*argv, "--model", "mlp-numpy", "--hidden", "16", "--seed", "2"])
    deployed = trainer_factory(args)().get_weights()
    union = write_site(tmp_path / "union.csv", 60, 7, sites=2)
    data = {"kind": "table", "path": str(union), "target": "outcome", "classes": ["no", "yes"]}
    data |= {"categorical": ["colour"], "categories": {"colour": list(LEVELS)}}
    config = SimConfig(data=data, model="mlp-numpy", hidden="16", seed=2, partition="natural", partition_by="site")
    simulated = build_task(config).initial_weights
    assert sorted(deployed) == sorted(simulated) and 16 in deployed[sorted(deployed)[0]].shape
    for name in deployed:
        np.testing.assert_array_equal(deployed[name], simulated[name])
    assert agent("--data", f"table:{site}", *DEPLOYED, "--hidden", "16") == 1
    assert "hidden sets the layers of mlp / mlp-numpy, not of 'logreg': drop --hidden" in capsys.readouterr().err


def test_an_arrays_site_missing_a_class_keeps_the_federations_width(tmp_path: Path) -> None:
    """A site whose labels are only 0 and 1 of a 3-class federation still builds the 3-class model."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    np.savez(tmp_path / "site.npz", x_train=x, y_train=(x[:, 0] > 0).astype(np.int64))
    spec = parse_data_spec(f"arrays:{tmp_path / 'site.npz'}", classes=["low", "mid", "high"])
    weights = builtin_trainer_factory(spec, SimConfig(model="logreg"))().get_weights()
    assert {name: w.shape for name, w in weights.items()} == {"weight": (3, 5), "bias": (3,)}
