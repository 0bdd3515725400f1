"""``fedloom ui``: refuses a directory without a store; prints a loopback URL with a one-time credential."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fedloom.cli.main import main
from fedloom.store import SqlStore

SRC = Path(__file__).resolve().parents[2] / "src"


def test_ui_refuses_a_directory_without_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--home", str(tmp_path / "nothing"), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "no store in" in err and "--home" in err
    assert not (tmp_path / "nothing").exists()  # only read: nothing created


def test_ui_prints_a_loopback_url_whose_token_opens_the_api(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with SqlStore.open_default(home) as store:
        run_id = store.create_run("sim", "simulation", {"rounds": 2}, seed=0)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ui = subprocess.Popen(
        [sys.executable, "-m", "fedloom.cli.main", "ui", "--home", str(home), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:(\d+)/dashboard/)#token=(flu_[A-Za-z0-9_-]{40,})", line)
        assert found, line
        api = f"http://127.0.0.1:{found.group(2)}/dashboard/api/runs"
        assert httpx.get(api).status_code == 401
        answer = httpx.get(api, headers={"Authorization": f"Bearer {found.group(3)}"})
        assert answer.status_code == 200 and answer.json()["runs"][0]["id"] == run_id
        assert httpx.get(api, headers={"Authorization": "Bearer flu_" + "x" * 43}).status_code == 401
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        ui.communicate(timeout=15)
