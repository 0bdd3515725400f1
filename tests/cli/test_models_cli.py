"""``fedloom models list`` and ``fedloom models export`` against a store populated in tmp_path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedloom.cli.models import register
from fedloom.core import from_bytes
from fedloom.core.errors import StoreError
from fedloom.store import SqlStore
from fedloom.store.sql import sqlite_url


def _parser() -> argparse.ArgumentParser:
    """A stand-alone ``fedloom`` parser holding only ``models``."""
    parser = argparse.ArgumentParser(prog="fedloom")
    register(parser.add_subparsers(dest="command"))
    return parser


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(list(argv))
    code = args.func(args)
    return code, capsys.readouterr().out


def _weights(rnd: int) -> dict[str, np.ndarray]:
    return {
        "fc.weight": np.full((2, 3), rnd, dtype=np.float32),
        "fc.bias": np.arange(2, dtype=np.float32) + rnd,
    }


def _local(rnd: int, site: int) -> dict[str, np.ndarray]:
    return {name: value + 0.5 * site for name, value in _weights(rnd).items()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An older empty run, then 'pilot': global models of rounds 1..3 and two local models in rounds 2 and 4."""
    root = tmp_path / "home"
    with SqlStore.open_default(root) as store:
        store.create_run("older", "simulation", {}, seed=0)
        run_id = store.create_run("pilot", "deployment", {}, seed=1)
        for rnd in (1, 2, 3):
            store.save_global_model(run_id, rnd, _weights(rnd), num_samples=100 * rnd)
        for rnd in (2, 4):
            for site in (1, 2):
                store.save_local_model(run_id, rnd, f"c{site}", _local(rnd, site), num_samples=10 * site, metrics={})
    return root


def _pilot(home: Path) -> str:
    with SqlStore.open_default(home) as store:
        return next(r.id for r in store.list_runs() if r.name == "pilot")


def test_list_shows_each_global_model_with_its_figures(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "models", "list", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {_pilot(home)} (pilot, deployment, running)")  # the newest run by default
    assert lines[1].split() == ["ROUND", "SAMPLES", "SHA256", "CREATED", "SIZE", "LOCAL_MODELS"]
    with SqlStore.open_default(home) as store:
        records = store.list_global_models(_pilot(home))
    for line, record, locals_ in zip(lines[2:5], records, (0, 2, 0), strict=True):
        cells = line.split()
        assert cells[:3] == [str(record.round), str(record.num_samples), record.sha256[:12]]
        assert cells[-1] == str(locals_)
        assert cells[-2] == "B" and int(cells[-3]) > 0  # the blob's size, e.g. "216 B"
    assert "round 4: 2 local model(s), no global model" in out


def test_list_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "models", "list", _pilot(home)[:8], "--home", str(home), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["run"]["name"] == "pilot"
    assert [m["round"] for m in data["global_models"]] == [1, 2, 3]
    assert [m["num_samples"] for m in data["global_models"]] == [100, 200, 300]
    assert [m["local_models"] for m in data["global_models"]] == [0, 2, 0]
    assert all(len(m["sha256"]) == 64 and m["size_bytes"] > 0 for m in data["global_models"])
    assert data["local_models_per_round"] == {"2": 2, "4": 2}


def test_list_accepts_a_run_name_and_db_url(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(home / "fedloom.db").render_as_string(hide_password=False)
    code, out = _run(capsys, "models", "list", "older", "--db-url", url, "--home", str(home), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["run"]["name"] == "older"
    assert data["global_models"] == []


def test_list_without_a_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StoreError, match="no store in"):
        _run(capsys, "models", "list", "--home", str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()  # reading never creates a store


def test_export_writes_the_stored_global_model(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "out" / "model.safetensors"
    code, out = _run(capsys, "models", "export", "--round", "2", "--out", str(out_file), "--home", str(home))
    assert code == 0
    assert "from safetensors.torch import load_file" in out
    loaded = load_file(str(out_file))
    expected = _weights(2)
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value)
    _loaded, header = from_bytes(out_file.read_bytes())
    assert header.round == 2 and header.num_samples == 200
    with SqlStore.open_default(home) as store:
        record = store.list_global_models(_pilot(home))[1]
    assert header.sha256 == record.sha256
    assert not [p for p in out_file.parent.iterdir() if p.name != "model.safetensors"]  # no temporary left


def test_export_of_an_unknown_round_lists_the_available_ones(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "m.safetensors"
    with pytest.raises(StoreError, match=r"no global model for round 9; rounds: 1, 2, 3"):
        _run(capsys, "models", "export", "--round", "9", "--out", str(out_file), "--home", str(home))
    assert not out_file.exists()


def test_export_of_an_unknown_run_is_an_error(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StoreError, match="no run is named 'nope'"):
        _run(
            capsys,
            "models",
            "export",
            "--run",
            "nope",
            "--round",
            "1",
            "--out",
            str(tmp_path / "m"),
            "--home",
            str(home),
        )


def test_export_refuses_to_overwrite_without_force(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "m.safetensors"
    out_file.write_bytes(b"keep me")
    argv = ["models", "export", "--round", "1", "--out", str(out_file), "--home", str(home)]
    with pytest.raises(StoreError, match="already exists"):
        _run(capsys, *argv)
    assert out_file.read_bytes() == b"keep me"
    assert _run(capsys, *argv, "--force")[0] == 0
    np.testing.assert_array_equal(load_file(str(out_file))["fc.weight"], _weights(1)["fc.weight"])


def test_export_of_a_local_model(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "local.safetensors"
    argv = ["models", "export", "--round", "2", "--local", "c2", "--out", str(out_file), "--home", str(home)]
    assert _run(capsys, *argv)[0] == 0
    weights, header = from_bytes(out_file.read_bytes())
    assert header.client_id == "c2" and header.round == 2 and header.num_samples == 20
    for name, value in _local(2, 2).items():
        np.testing.assert_array_equal(weights[name], value)


def test_export_of_a_missing_local_model_names_who_uploaded(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = str(tmp_path / "x.safetensors")
    with pytest.raises(StoreError, match=r"no local model of 'c9' in round 2; it has: c1, c2"):
        _run(capsys, "models", "export", "--round", "2", "--local", "c9", "--out", out_file, "--home", str(home))
    with pytest.raises(StoreError, match=r"no local models in round 3; rounds with local models: 2, 4"):
        _run(capsys, "models", "export", "--round", "3", "--local", "c1", "--out", out_file, "--home", str(home))


def test_export_of_a_deployed_agent_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "home"
    with SqlStore.open_default(root) as store:
        run_id = store.create_run("deploy", "deployment", {}, seed=0)
        store.create_token("site-a")
        token = store.list_tokens()[0]
        agent, _credential = store.register_agent(run_id, "site-a", token)
        store.save_global_model(run_id, 0, _weights(0), num_samples=0)
        store.save_local_model(run_id, 1, agent.id, _local(1, 1), num_samples=7, metrics={"loss": 0.5})
    out_file = tmp_path / "a.safetensors"
    argv = ["models", "export", "--round", "1", "--local", "site-a", "--out", str(out_file), "--home", str(root)]
    assert _run(capsys, *argv)[0] == 0
    _weights_read, header = from_bytes(out_file.read_bytes())
    assert header.client_id == agent.id and header.num_samples == 7


def test_export_with_a_database_url_finds_the_blobs_the_aggregator_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database URL (PostgreSQL in production) does not say where the filesystem blobs are:
    the aggregator records its home in the run's config, and export reads it (no --home needed)."""
    server_home = tmp_path / "aggregator-home"
    url = sqlite_url(tmp_path / "shared.db")
    with SqlStore(url, blob_root=server_home / "blobs") as store:
        run_id = store.create_run("prod", "deployment", {"server": {"home": str(server_home)}}, seed=0)
        store.save_global_model(run_id, 1, _weights(1), num_samples=10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("FEDLOOM_HOME", raising=False)
    out = tmp_path / "model.safetensors"
    code, _ = _run(capsys, "models", "export", "--db-url", url, "--run", "prod", "--round", "1", "--out", str(out))
    assert code == 0
    np.testing.assert_array_equal(load_file(str(out))["fc.weight"], _weights(1)["fc.weight"])
    code, listing = _run(capsys, "models", "list", "prod", "--db-url", url, "--json")
    assert json.loads(listing)["global_models"][0]["size_bytes"] > 0
