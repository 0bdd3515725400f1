"""End-to-end fixtures: a real aggregator and real agents, as processes on loopback.

Every process is started through :class:`Cluster`, which the ``cluster`` fixture tears
down (SIGINT/SIGTERM, then SIGKILL of each process group) whatever the test did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from fedloom.cli.federation import (
    RUN_KIND,
    Child,
    agent_command,
    agent_env,
    read_credential,
    start_aggregator,
    stop_all,
)
from fedloom.store import SqlStore

T = TypeVar("T")
SLOW_SITE = Path(__file__).resolve().parent / "slow_site.py"
#: settings that make digits learn fast enough for a few rounds
FAST_LEARNING: dict[str, Any] = {"lr": 0.5, "epochs": 2, "batch_size": 16}


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """The processes of one test, its store home and helpers to look at the store."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.children: list[Child] = []
        self.server: Child | None = None
        self.url = ""
        self.port = 0

    # ----------------------------------------------------------------- store

    def store(self) -> SqlStore:
        return SqlStore.open_default(self.home)

    def tokens(self, *names: str, admin: str | None = None) -> dict[str, str]:
        store = self.store()
        try:
            return {n: store.create_token(n, role="admin" if n == admin else "agent") for n in names}
        finally:
            store.close()

    def run_id(self) -> str:
        store = self.store()
        try:
            run = store.find_run("default", kind=RUN_KIND)
        finally:
            store.close()
        assert run is not None, "the aggregator has not created its run"
        return run.id

    def query(self, read: Callable[[SqlStore, str], T]) -> T:
        """``read(store, run_id)`` on a fresh connection to the aggregator's database."""
        store = self.store()
        try:
            run = store.find_run("default", kind=RUN_KIND)
            assert run is not None
            return read(store, run.id)
        finally:
            store.close()

    def global_rounds(self) -> list[int]:
        return self.query(lambda s, r: [m.round for m in s.list_global_models(r)])

    # ----------------------------------------------------------------- processes

    def start_server(self, port: int = 0, **settings: Any) -> str:
        settings.setdefault("check_interval_seconds", 0.2)
        server, url = start_aggregator(self.home, port=port, settings=settings, timeout=60)
        self.server = server
        self.children.append(server)
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        return url

    def start_agent(
        self,
        name: str,
        site: int,
        sites: int,
        token: str | None,
        *,
        upload_initial: bool = False,
        delay: float = 0.0,
        extra_args: tuple[str, ...] = (),
    ) -> Child:
        argv = agent_command(
            self.url,
            name,
            self.home / "agents" / name,
            SLOW_SITE,
            {"site": str(site), "sites": str(sites), "delay": f"{delay:g}"},
            upload_initial=upload_initial,
            poll_wait=2.0,
            extra_args=extra_args,
        )
        agent = Child(name, argv, log_file=self.home / f"{name}.log", env=agent_env(token))
        self.children.insert(0, agent)  # agents stop before the aggregator
        return agent

    def start_agents(self, count: int, **options: Any) -> list[Child]:
        names = [f"site-{i}" for i in range(count)]
        tokens = self.tokens(*names, admin=names[0])
        return [
            self.start_agent(name, i, count, tokens[name], upload_initial=i == 0, **options)
            for i, name in enumerate(names)
        ]

    def credential(self, name: str) -> str | None:
        return read_credential(self.home / "agents" / name)

    def status(self, credential: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/status", headers=bearer(credential), timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def wait_exit(self, child: Child, timeout: float) -> int:
        try:
            return child.wait(timeout)
        except Exception:
            pytest.fail(f"{child.name} did not exit within {timeout:g} s; its output:\n{child.output()[-4000:]}")

    def close(self) -> None:
        stop_all(self.children, grace=5.0)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def digits_weights(weight_shape: tuple[int, int] = (10, 64)) -> dict[str, np.ndarray]:
    """Zero weights of the digits logistic model (or a wrongly shaped one)."""
    return {
        "weight": np.zeros(weight_shape, dtype=np.float32),
        "bias": np.zeros(weight_shape[0], dtype=np.float32),
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    home = tmp_path / "home"
    home.mkdir()
    federation = Cluster(home)
    try:
        yield federation
    finally:
        federation.close()
