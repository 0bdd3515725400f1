"""``fedloom models verify RUN``: OK with the links checked, or the first mismatch and exit status 1."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedloom.cli.main import main
from fedloom.store import SqlStore


def _weights(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 2), value, np.float32), "bn.num_batches_tracked": np.array(3, np.int64)}


def _home_with_run(tmp_path: Path) -> tuple[Path, str]:
    home = tmp_path / "home"
    with SqlStore.open_default(home) as store:
        run_id = store.create_run("pilot", "deployment", {"strategy": {"name": "fedavg"}}, seed=0)
        store.save_global_model(run_id, 0, _weights(0.0), num_samples=0)
        for r in (1, 2):
            store.save_local_model(run_id, r, "site-a", _weights(r), 7, {"loss": 0.5})
            store.save_global_model(run_id, r, _weights(r + 0.5), num_samples=7)
    return home, run_id


def test_verify_prints_ok_with_the_links_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, run_id = _home_with_run(tmp_path)
    assert main(["models", "verify", run_id, "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: run {run_id[:8]}") and "3 lineage link(s) and 5 blob(s) match" in out
    assert main(["models", "verify", "pilot", "--home", str(home), "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert (details["ok"], details["links_checked"], details["mismatch"]) == (True, 3, None)
    with SqlStore.open_default(home) as store:
        (last,) = [g for g in store.list_global_models(run_id) if g.round == 2]
    with sqlite3.connect(home / "fedloom.db") as conn:
        (link,) = conn.execute("SELECT lineage_sha256 FROM global_models WHERE round = 2").fetchone()
    assert details["last_link"] == link and len(link) == 64 and last.round == 2
    assert f"last link {link}" in out


def test_verify_names_the_first_mismatch_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, run_id = _home_with_run(tmp_path)
    with sqlite3.connect(home / "fedloom.db") as conn:
        conn.execute("UPDATE local_models SET num_samples = 8 WHERE round = 2")
    assert main(["models", "verify", run_id, "--home", str(home)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH in run" in captured.out and "after 2 matching link(s): round 2, table local_models" in captured.out
    assert "does not verify" in captured.err
    assert main(["models", "verify", run_id, "--home", str(home), "--json"]) == 1
    mismatch = json.loads(capsys.readouterr().out)["mismatch"]
    assert (mismatch["round"], mismatch["table"]) == (2, "local_models")


def test_verify_of_an_unknown_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, _ = _home_with_run(tmp_path)
    assert main(["models", "verify", "nope", "--home", str(home)]) == 1
    assert "no run is named 'nope'" in capsys.readouterr().err
