"""Light-agent tests reuse the aggregator test helpers (tests/server) and its in-thread live server."""

from __future__ import annotations

import sys
from pathlib import Path

SERVER_TESTS = Path(__file__).resolve().parents[1] / "server"
if str(SERVER_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVER_TESTS))

import pytest  # noqa: E402

from fedloom.store import SqlStore  # noqa: E402


@pytest.fixture
def store(tmp_path):
    with SqlStore.open_default(tmp_path / "home") as opened:
        yield opened
