"""The dashboard in a real browser (Playwright + Debian Chromium) against a real ``fedloom federation up``.

The federation's aggregator serves the dashboard; the test signs in with an admin token
it created in the federation's store, watches rounds arrive without reloading, then
opens the finished run in ``fedloom ui`` over the same store and takes the screenshot
of the run page (``FEDLOOM_DASHBOARD_SCREENSHOT=PATH`` also copies it there; see
``scripts/dashboard_screenshot.sh``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from fedloom.store import SqlStore

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip("Debian Chromium is not installed at /usr/bin/chromium", allow_module_level=True)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SRC = Path(__file__).resolve().parents[2] / "src"
ROUNDS = 6
#: local epochs per round: enough work that a round takes seconds, so the page sees rounds arrive
EPOCHS = 1500
LOSS_POINTS = '#chart-loss g.points[data-series="train_loss (train)"] circle.point'
ACCURACY_POINTS = "#chart-accuracy circle.point"
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def fedloom(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fedloom.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Federation:
    """The store home and admin/agent tokens of a ``federation up`` started in the background."""

    def __init__(self, home: Path) -> None:
        self.home = home
        with SqlStore.open_default(home) as store:
            self.admin = store.create_token("dashboard-admin", role="admin")
            self.agent = store.create_token("dashboard-agent", role="agent")
        flags = ["--agents", "3", "--rounds", str(ROUNDS), "--epochs", str(EPOCHS), "--status-interval", "60"]
        self.process = fedloom("federation", "up", "--home", str(home), *flags, log=home / "federation.out")

    def port(self) -> int:
        path = self.home / "aggregator.port"
        return wait_until(
            lambda: path.is_file() and path.read_text().strip().isdigit() and int(path.read_text()), 60, "port"
        )

    def read(self, fn: Callable[[SqlStore], T]) -> T:
        with SqlStore.open_default(self.home) as store:
            return fn(store)

    def run_id(self) -> str:
        return wait_until(lambda: self.read(lambda s: [r.id for r in s.list_runs()]), 30, "the run")[0]

    def stored_loss_rounds(self) -> int:
        return self.read(lambda s: len(s.metric_series(self.run_id(), "train_loss")))


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path / "home")
    try:
        yield fed
    finally:
        stop(fed.process)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def count(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_live_dashboard_of_a_real_federation(federation: Federation, browser: Any, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{federation.port()}"
    assert httpx.get(f"{base}/dashboard/api/runs").status_code == 401
    refused = httpx.get(f"{base}/dashboard/api/runs", headers={"Authorization": f"Bearer {federation.agent}"})
    assert refused.status_code == 403
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/dashboard/")
    page.wait_for_selector("#login-form", state="visible")
    assert count(page, "#runs-table") == 0  # nothing is shown before signing in
    page.fill("#token", federation.agent)
    page.click("#login-form button[type=submit]")
    wait_until(lambda: "admin token" in page.inner_text("#login-error"), 10, "the agent token's refusal")
    assert page.is_visible("#login-form") and count(page, "#runs-table") == 0
    page.fill("#token", federation.admin)
    page.click("#login-form button[type=submit]")
    run_id = federation.run_id()
    page.wait_for_selector(f'#runs-table a[href="#/run/{run_id}"]')
    page.click(f'#runs-table a[href="#/run/{run_id}"]')
    page.wait_for_selector(LOSS_POINTS)
    page.evaluate("window.__notReloaded = true")
    seen = count(page, LOSS_POINTS)
    assert seen < ROUNDS, "the run finished before the page could watch a round arrive"
    wait_until(lambda: count(page, LOSS_POINTS) > seen, 60, "the next round on the open page")
    assert page.evaluate("window.__notReloaded === true"), "the new round must appear without a reload"
    stored = federation.stored_loss_rounds()
    shown = count(page, LOSS_POINTS)
    assert stored >= shown > seen  # never a point the store does not hold
    page.goto(f"{base}/dashboard/#/agents")
    page.wait_for_selector("#agents-table tbody tr")
    names = page.locator("#agents-table tbody tr td:first-child").all_inner_texts()
    assert sorted(names) == ["site-0", "site-1", "site-2"]
    assert errors == []
    assert federation.process.wait(timeout=120) == 0
    finished_run_page(federation, browser, tmp_path, run_id)


def finished_run_page(federation: Federation, browser: Any, tmp_path: Path, run_id: str) -> None:
    """``fedloom ui`` over the finished federation's store: every stored round is one point; the screenshot."""
    token_file = tmp_path / "ui.token"
    flags = ["--home", str(federation.home), "--port", "0", "--token-file", str(token_file)]
    ui = fedloom("ui", *flags, log=tmp_path / "ui.out")
    try:
        port_file = federation.home / "ui.port"
        wait_until(port_file.is_file, 30, "fedloom ui's port")
        secret = token_file.read_text().strip()
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{int(port_file.read_text())}/dashboard/#token={secret}")
        page.wait_for_selector(f'#runs-table a[href="#/run/{run_id}"]')
        page.goto(f"http://127.0.0.1:{int(port_file.read_text())}/dashboard/#/run/{run_id}")
        page.wait_for_selector(LOSS_POINTS)
        stored_accuracy = federation.read(lambda s: len(s.metric_series(run_id, "accuracy")))
        assert count(page, LOSS_POINTS) == federation.stored_loss_rounds() == ROUNDS
        assert count(page, ACCURACY_POINTS) == stored_accuracy == ROUNDS  # the aggregator evaluates every round
        assert count(page, "#participation rect.cell") == 3 * ROUNDS
        assert count(page, "#models button.download") == ROUNDS + 1
        shot = tmp_path / "dashboard-run.png"
        page.screenshot(path=str(shot))
        page.goto(f"http://127.0.0.1:{int(port_file.read_text())}/dashboard/#/agents/{run_id}")
        page.wait_for_selector("#agents-table tbody tr")
        joined = page.locator("#agents-table tbody tr td:nth-child(4)").all_inner_texts()
        assert joined == [str(ROUNDS)] * 3  # every agent contributed to every round
        assert shot.stat().st_size > 10_000
        assert errors == []
        target = os.environ.get("FEDLOOM_DASHBOARD_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
    finally:
        stop(ui)
