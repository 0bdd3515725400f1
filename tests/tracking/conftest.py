"""Tracking fixtures: a small simulated run exported to sinks, and a real ``mlflow server``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore
from fedloom.tracking import TrackingSettings

ROUNDS = 3


def small_config(**fields: object) -> SimConfig:
    """numpy logistic regression on digits: 6 clients, every one each round, a few rounds."""
    base = {"dataset": "digits", "model": "logreg", "clients": 6, "rounds": ROUNDS, "fraction": 1.0}
    return SimConfig(**{**base, **fields})  # type: ignore[arg-type]


def run_tracked(home: Path, settings: TrackingSettings, **fields: object) -> tuple[SqlStore, str]:
    store = SqlStore.open_default(home)
    result = simulate_config(small_config(**fields), store=store, tracking=settings)
    assert result.run_id is not None
    return store, result.run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free loopback port, its runs in a SQLite file, artifacts proxied."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
