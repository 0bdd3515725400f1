"""``fedloom runs list`` and ``fedloom runs show`` against a store populated in tmp_path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from fedloom.cli.runs import register
from fedloom.core.errors import StoreError
from fedloom.store import SqlStore


def _parser() -> argparse.ArgumentParser:
    """A stand-alone ``fedloom`` parser holding only ``runs`` (other commands belong to others)."""
    parser = argparse.ArgumentParser(prog="fedloom")
    register(parser.add_subparsers(dest="command"))
    return parser


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(list(argv))
    code = args.func(args)
    return code, capsys.readouterr().out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Two runs: a finished 3-round simulation with metrics and rejections, and a bare deployment."""
    root = tmp_path / "home"
    with SqlStore.open_default(root) as store:
        run_id = store.create_run("mnist-fedavg", "simulation", {"lr": 0.05, "clients": 100}, seed=11)
        weights = {"w": np.zeros(3, dtype=np.float32)}
        store.save_global_model(run_id, 0, weights, num_samples=0)
        for rnd, (loss, acc) in enumerate([(1.9, 0.41), (1.2, 0.67), (0.8, 0.8123)], start=1):
            store.open_round(run_id, rnd, ["c1", "c2"])
            store.save_global_model(run_id, rnd, weights, num_samples=640)
            store.record_metrics(run_id, rnd, {"loss": loss, "accuracy": acc, "seconds": 1.5 * rnd})
            store.close_round(run_id, rnd, num_updates=2, num_samples=640)
        store.record_rejection(run_id, 2, "c7", "not_selected", "client c7 was not selected for round 2")
        store.record_rejection(run_id, 3, "c2", "invalid_weights", "tensor 'w' contains 1 NaN and 0 Inf values")
        store.finish_run(run_id, "finished", {"accuracy": 0.8123})
        store.create_run("hospital-pilot", "deployment", {}, seed=0)
    return root


def _sim_id(home: Path) -> str:
    with SqlStore.open_default(home) as store:
        return next(r.id for r in store.list_runs() if r.name == "mnist-fedavg")


def test_list_shows_every_run_with_its_figures(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "runs", "list", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "STATUS", "ROUNDS", "ACCURACY", "CREATED"]
    assert lines[1].split()[1:5] == ["hospital-pilot", "deployment", "running", "0"]  # newest first
    sim = lines[2].split()
    assert sim[0] == _sim_id(home)[:8]
    assert sim[1:6] == ["mnist-fedavg", "simulation", "finished", "3", "0.8123"]


def test_list_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "runs", "list", "--home", str(home), "--json")
    assert code == 0
    runs = {r["name"]: r for r in json.loads(out)}
    assert runs["mnist-fedavg"]["rounds"] == 3
    assert runs["mnist-fedavg"]["final_accuracy"] == 0.8123
    assert runs["hospital-pilot"]["final_accuracy"] is None
    assert runs["mnist-fedavg"]["config"] == {"lr": 0.05, "clients": 100}


def test_show_prints_config_rounds_models_and_rejections(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = _sim_id(home)
    code, out = _run(capsys, "runs", "show", run_id[:6], "--home", str(home))
    assert code == 0
    assert run_id in out
    assert '"lr": 0.05' in out
    assert '"clients": 100' in out
    rounds = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert rounds == [
        ["1", "1.9000", "0.4100", "2", "640", "1.50"],
        ["2", "1.2000", "0.6700", "2", "640", "3.00"],
        ["3", "0.8000", "0.8123", "2", "640", "4.50"],
    ]
    assert "global models: 4" in out
    assert "rejections: 2" in out
    assert "[invalid_weights] round 3, client c2: tensor 'w' contains 1 NaN" in out


def test_show_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "runs", "show", _sim_id(home), "--home", str(home), "--json")
    assert code == 0
    details = json.loads(out)
    assert details["run"]["status"] == "finished"
    assert [r["metrics"]["accuracy"] for r in details["rounds"]] == [0.41, 0.67, 0.8123]
    assert (details["global_models"], details["rejections"]) == (4, 2)
    assert details["recent_rejections"][0]["code"] == "not_selected"


def test_home_defaults_to_the_environment(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLOOM_HOME", str(home))
    _, out = _run(capsys, "runs", "list")
    assert "mnist-fedavg" in out


def test_empty_or_missing_store_is_friendly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "runs", "list", "--home", str(tmp_path / "nothing"))
    assert code == 0
    assert "No runs recorded yet" in out
    assert not (tmp_path / "nothing").exists()  # reading never creates a store
    SqlStore.open_default(tmp_path / "empty").close()
    _, out = _run(capsys, "runs", "list", "--home", str(tmp_path / "empty"))
    assert "No runs recorded yet" in out
    _, out = _run(capsys, "runs", "list", "--home", str(tmp_path / "empty"), "--json")
    assert json.loads(out) == []
    with pytest.raises(StoreError, match="No runs recorded yet"):
        _run(capsys, "runs", "show", "abcd", "--home", str(tmp_path / "nothing"))


def test_show_unknown_run_is_a_store_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StoreError, match="no run with id"):
        _run(capsys, "runs", "show", "ffffffff", "--home", str(home))


def test_runs_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "runs")
    assert code == 2
    assert "list" in out
    assert "show" in out


def test_runs_list_reads_a_database_by_url(tmp_path, capsys):
    import argparse

    from fedloom.cli import runs
    from fedloom.store import SqlStore

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    store = SqlStore(url)
    store.create_run("by-url", "deployment", {}, 0)
    store.close()
    parser = argparse.ArgumentParser()
    runs.register(parser.add_subparsers())
    args = parser.parse_args(["runs", "list", "--db-url", url, "--home", str(tmp_path / "empty")])
    assert args.func(args) == 0
    assert "by-url" in capsys.readouterr().out
