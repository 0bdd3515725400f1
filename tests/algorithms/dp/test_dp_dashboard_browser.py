"""A DP run's page in a real browser (Playwright + Debian Chromium) over ``fedloom ui``: the
privacy line shows the stored ε, δ, mode and the target-ε stop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dashboard"))
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, fedloom, playwright_sync, stop, wait_until

from fedloom.cli.main import main
from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")


def test_the_run_page_shows_the_current_epsilon_and_why_the_run_stopped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sim = ["sim", "--clients", "20", "--fraction", "0.5", "--rounds", "10", "--home", str(home)]
    dp = ["--dp", "central", "--dp-noise", "4", "--dp-clip", "5", "--dp-delta", "1e-4", "--dp-target-epsilon", "3"]
    assert main([*sim, *dp]) == 0
    with SqlStore.open_default(home) as store:
        run_id = store.list_runs()[0].id
        epsilon = store.metric_series(run_id, "privacy/epsilon")[-1][1]
    token_file = tmp_path / "ui.token"
    ui = fedloom("ui", "--home", str(home), "--port", "0", "--token-file", str(token_file), log=tmp_path / "ui.out")
    try:
        port_file = home / "ui.port"
        wait_until(port_file.is_file, 30, "fedloom ui's port")
        secret = token_file.read_text().strip()
        base = f"http://127.0.0.1:{int(port_file.read_text())}/dashboard/"
        with playwright_sync.sync_playwright() as p:
            browser: Any = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{base}#token={secret}")
                page.wait_for_selector(f'#runs-table a[href="#/run/{run_id}"]')
                page.goto(f"{base}#/run/{run_id}")
                page.wait_for_selector("#privacy")
                text = page.inner_text("#privacy")
            finally:
                browser.close()
    finally:
        stop(ui)
    assert f"central DP · ε = {round(epsilon, 4):g} at δ = 0.0001 after round 3" in text
    assert "stopped: the next round would exceed the target ε 3" in text
    assert errors == []
