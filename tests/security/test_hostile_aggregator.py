"""A compromised aggregator against a real ``fedloom agent`` process: the agent must bound what it
reads and back off instead of hammering, whatever the aggregator sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hostile_aggregator import PUSH_CAP_BYTES, HostileAggregator
from security_helpers import wait_until

from fedloom.cli.federation import Child, agent_command, agent_env

BOOSTED_SITE = Path(__file__).resolve().parent / "boosted_site.py"
#: seconds the agent is watched against an aggregator that never gives it a usable model
WATCH_SECONDS = 6.0
#: downloads an agent that backs off may make in WATCH_SECONDS (1 s, 2 s, 4 s ... apart, or slower)
MAX_DOWNLOADS = 8


def _digits_model() -> dict[str, np.ndarray]:
    return {"weight": np.zeros((10, 64), dtype=np.float32), "bias": np.zeros(10, dtype=np.float32)}


@pytest.fixture
def agent_against(tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    started: list[Child] = []

    def start(url: str) -> Child:
        argv = agent_command(
            url, "victim", tmp_path / "victim", BOOSTED_SITE, {"site": "0", "sites": "3"}, poll_wait=1.0
        )
        agent = Child("victim", argv, log_file=tmp_path / "victim.log", env=agent_env("flj_" + "t" * 43))
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


def test_agent_stops_reading_an_endless_model_download(agent_against: Callable[[str], Child]) -> None:
    with HostileAggregator("endless", _digits_model()) as hostile:
        agent = agent_against(hostile.url)
        wait_until(lambda: hostile.pushed, 60, f"the agent to finish one download:\n{agent.output()[-2000:]}")
        read = hostile.pushed[0]
    assert read < PUSH_CAP_BYTES, f"the agent read {read >> 20} MiB of an endless model download without stopping"


def test_agent_backs_off_when_the_model_never_matches_the_task(agent_against: Callable[[str], Child]) -> None:
    with HostileAggregator("wrong_hash", _digits_model()) as hostile:
        agent = agent_against(hostile.url)
        wait_until(lambda: hostile.downloads, 60, f"the agent's first download:\n{agent.output()[-2000:]}")
        first = hostile.downloads
        time.sleep(WATCH_SECONDS)
        downloads = hostile.downloads - first
    assert downloads <= MAX_DOWNLOADS, f"the agent downloaded the same model {downloads} times in {WATCH_SECONDS:g} s"
