"""Fixtures of the hostile-input suite: one real aggregator per test, torn down whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from security_helpers import Federation


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    home = tmp_path / "home"
    home.mkdir()
    attacked = Federation(home)
    try:
        yield attacked
    finally:
        attacked.stop()
