"""Edge-aggregator tests reuse the aggregator helpers (tests/server) and the light devices (tests/light)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS / "server", TESTS / "light", TESTS / "edge"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pytest  # noqa: E402
from aggregator_helpers import Clock  # noqa: E402

from fedloom.store import SqlStore  # noqa: E402


@pytest.fixture
def store(tmp_path):
    with SqlStore.open_default(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def clock():
    return Clock()
