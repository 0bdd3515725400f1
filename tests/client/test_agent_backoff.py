"""An aggregator whose task names a model it never serves must not make the agent hammer it.

The fake here announces one global model hash in its task but serves a different model:
the agent must back off exponentially (bounded, jittered from a seeded RNG) between the
re-downloads, log it, and go back to full speed once the hashes agree again.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedloom.client.agent import Agent
from fedloom.client.backoff import Backoff
from fedloom.core import to_bytes
from fedloom.core.errors import ConfigError
from fedloom.core.serialization import content_hash


def _fake_module() -> Any:
    """tests/client/test_agent.py (its fake aggregator), imported by path: tests are not a package."""
    spec = importlib.util.spec_from_file_location("_agent_tests_for_backoff", Path(__file__).with_name("test_agent.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_fakes = _fake_module()


def lying_aggregator(lies: int | None) -> Any:
    """A fake whose first ``lies`` downloads (None: all) serve a model other than the task's."""
    fake = _fakes.FakeAggregator(_fakes.initial_weights(), max_rounds=1)
    fake.max_requests = 100_000  # the test, not the fake, decides what is too many
    original = fake._global
    served = {"count": 0}

    def serve(which: str) -> httpx.Response:
        served["count"] += 1
        if lies is not None and served["count"] > lies:
            return original(which)
        other = {k: v + np.float32(1.0) for k, v in fake.globals[1].items()}
        return httpx.Response(200, content=to_bytes(other, round=1), headers={"X-Fedloom-Sha256": content_hash(other)})

    fake._global = serve
    return fake


def downloads(fake: Any) -> int:
    return sum(1 for method, path, _ in fake.requests if path.startswith("/v1/models/global/"))


def test_a_model_that_never_matches_the_task_is_fetched_with_growing_delays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.agent")
    fake = lying_aggregator(lies=None)
    backoff = Backoff(base_delay=0.02, max_delay=0.16, rng=random.Random(7))
    agent = Agent(
        fake.client(), _fakes.HookedTrainer, tmp_path / "state", "site-a", _fakes.SITE_TOKEN,
        poll_wait=0.01, min_poll_interval=0.0, mismatch_backoff=backoff,
    )  # fmt: skip
    stopper = threading.Timer(1.5, agent.stop)
    stopper.start()
    started = time.monotonic()
    try:
        assert agent.run() == "stopped"
    finally:
        stopper.cancel()
    assert time.monotonic() - started < 5
    # delays of at least 0.01, 0.02, 0.04, 0.08, then 0.08 each: about a dozen tries in 1.5 s,
    # where a loop without backoff makes hundreds
    assert 5 <= downloads(fake) <= 25, downloads(fake)
    assert not fake.accepted  # never trained on a model the task did not name
    waits = [r.getMessage() for r in caplog.records if "backing off" in r.getMessage()]
    assert len(waits) == downloads(fake) or len(waits) == downloads(fake) - 1
    assert "attempt 1" in waits[0] and "differs from the task's" in waits[0]


def test_the_delays_grow_are_bounded_and_jittered_reproducibly() -> None:
    delays = [d for d in Backoff(base_delay=1.0, max_delay=8.0, rng=random.Random(3)).delays(8)]
    again = [d for d in Backoff(base_delay=1.0, max_delay=8.0, rng=random.Random(3)).delays(8)]
    assert delays == again  # seeded: the same schedule every time
    caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a lock-step schedule
    with pytest.raises(ConfigError, match="base_delay"):
        Backoff(base_delay=0.0)
    with pytest.raises(ConfigError, match="max_delay"):
        Backoff(base_delay=2.0, max_delay=1.0)


def test_once_the_hashes_agree_the_round_goes_ahead(tmp_path: Path) -> None:
    fake = lying_aggregator(lies=3)
    backoff = Backoff(base_delay=0.001, max_delay=0.004, rng=random.Random(0))
    agent = Agent(
        fake.client(), _fakes.HookedTrainer, tmp_path / "state", "site-a", _fakes.SITE_TOKEN,
        poll_wait=0.01, min_poll_interval=0.0, mismatch_backoff=backoff,
    )  # fmt: skip
    assert agent.run() == "finished"
    assert [a["round"] for a in fake.accepted] == [1]
    assert backoff.attempts == 0  # reset by the matching download
