"""Fixtures for the deployment aggregator tests: a store in tmp_path, a settable clock."""

from __future__ import annotations

import pytest
from aggregator_helpers import INIT, Clock, config

from fedloom.server.aggregator import Aggregator
from fedloom.store import SqlStore


@pytest.fixture
def store(tmp_path):
    with SqlStore.open_default(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_aggregator(store, clock):
    """``make_aggregator(initial=INIT, **config_fields)`` on the test store and clock."""

    def make(initial=INIT, the_store=None, the_clock=None, **fields) -> Aggregator:
        return Aggregator(config(**fields), the_store or store, clock=the_clock or clock, initial_weights=initial)

    return make
