"""The agent's state directory: round trips, permissions, atomic replacement, locking."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedloom.client import agent_state
from fedloom.client.agent_state import AgentPhase, AgentState, AgentStateStore, PendingUpload, atomic_write
from fedloom.core import to_bytes
from fedloom.core.errors import ConfigError
from fedloom.core.serialization import content_hash

WEIGHTS = {"w": np.ones((2, 2), dtype=np.float32)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    store = AgentStateStore(tmp_path / "agent")
    assert store.load() == AgentState()
    state = AgentState(
        phase=AgentPhase.SENDING,
        agent_id="a1",
        credential="fla_secret",
        round=3,
        global_sha256="ab" * 32,
        config={"round": 3, "lr": 0.1, "extra": {}},
        pending=PendingUpload(3, 40, "cd" * 32, "ab" * 32, {"train_loss": 0.5}),
    )
    store.save(state)
    assert store.load() == state
    assert '"state": "sending"' in store.state_path.read_text()
    assert store.state_path.stat().st_mode & 0o777 == 0o600
    assert store.directory.stat().st_mode & 0o777 == 0o700


def test_unreadable_or_foreign_state_is_a_clear_error(tmp_path: Path) -> None:
    store = AgentStateStore(tmp_path)
    store.state_path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        store.load()
    store.state_path.write_text('{"version": 99}')
    with pytest.raises(ConfigError, match="version 99"):
        store.load()
    store.state_path.write_text('{"state": "dancing"}')
    with pytest.raises(ConfigError, match="unreadable"):
        store.load()


def test_models_round_trip_and_damaged_ones_read_as_missing(tmp_path: Path) -> None:
    store = AgentStateStore(tmp_path)
    assert store.load_global() is None
    assert store.save_global(WEIGHTS, 2) == content_hash(WEIGHTS)
    loaded = store.load_global()
    assert loaded is not None
    assert loaded[1] == content_hash(WEIGHTS)
    payload = to_bytes(WEIGHTS, round=2, client_id="a1", num_samples=5)
    store.save_local(payload)
    assert store.load_local() == payload
    store.local_path.write_bytes(payload[:-3])  # torn by something other than fedloom
    assert store.load_local() is None
    store.global_path.write_bytes(b"garbage!")
    assert store.load_global() is None
    store.clear_models()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AgentStateStore(tmp_path)
    store.save(AgentState(agent_id="a1", credential="old"))

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent_state.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        store.save(AgentState(agent_id="a1", credential="new"))
    with pytest.raises(OSError, match="No space left"):
        store.save_local(to_bytes(WEIGHTS))
    monkeypatch.undo()
    assert store.load().credential == "old"
    assert not store.local_path.exists()
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(agent_state.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_sets_the_mode(tmp_path: Path) -> None:
    atomic_write(tmp_path / "x", b"data", mode=0o640)
    assert (tmp_path / "x").read_bytes() == b"data"
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_the_directory_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first, second = AgentStateStore(tmp_path), AgentStateStore(tmp_path)
    with first.locked(), pytest.raises(ConfigError, match="another agent"), second.locked():
        pass
    with second.locked():
        pass


def test_a_file_in_the_way_of_the_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "agent").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        AgentStateStore(tmp_path / "agent").save(AgentState())
