"""What an agent keeps on disk so that a restarted agent resumes where it stopped.

A state directory holds:

* ``state.json`` -- the agent's identity (agent id, **credential**, role, run id), its
  phase ``waiting_gm → gm_ready → training → sending → waiting_gm`` (or ``finished``),
  the round being worked on, the global model held, and what a pending upload is. It
  holds a secret, so it is written with mode 0600 (and the directory is made 0700).
* ``global.safetensors`` -- the last global model downloaded.
* ``local.safetensors`` -- the trained local model waiting to be uploaded: the exact
  bytes of the upload, so a restart re-sends the very same update.
* ``agent.lock`` -- an advisory lock, so two agents never share one directory.

Every file is replaced atomically (temporary file in the same folder, fsync,
``os.replace``, fsync of the folder): after a crash at any instant each file is either
its old or its new version, never a torn mix, and no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError, SerializationError
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.weights import Weights

try:  # POSIX; elsewhere the lock is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["AgentPhase", "AgentState", "AgentStateStore", "PendingUpload", "atomic_write"]

STATE_FILE = "state.json"
GLOBAL_FILE = "global.safetensors"
LOCAL_FILE = "local.safetensors"
LOCK_FILE = "agent.lock"
STATE_VERSION = 1


class AgentPhase(StrEnum):
    """Where an agent is in its round trip."""

    WAITING_GM = "waiting_gm"  # polling for a task / a new global model
    GM_READY = "gm_ready"  # holds the global model of the round it was selected for
    TRAINING = "training"  # trainer.fit running (a restart retrains)
    SENDING = "sending"  # local model saved, upload not yet confirmed (a restart re-sends)
    FINISHED = "finished"  # the run reached max_rounds


@dataclass(frozen=True)
class PendingUpload:
    """The local model in ``local.safetensors``: which round, trained from which global model."""

    round: int
    num_samples: int
    sha256: str
    global_sha256: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentState:
    """The persisted state; every change makes a new value (``replace``) that is then saved."""

    phase: AgentPhase = AgentPhase.WAITING_GM
    agent_id: str | None = None
    credential: str | None = None
    name: str | None = None
    role: str | None = None
    run_id: str | None = None
    round: int | None = None
    global_round: int | None = None
    global_sha256: str | None = None
    config: Mapping[str, Any] | None = None
    pending: PendingUpload | None = None
    uploaded_round: int | None = None
    uploaded_global_sha256: str | None = None

    def with_(self, **changes: Any) -> AgentState:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(data.pop("phase"))
        data["version"] = STATE_VERSION
        data["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentState:
        values = dict(data)
        version = values.pop("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ConfigError(f"agent state has version {version}; this fedloom reads version {STATE_VERSION}")
        values.pop("updated_at", None)
        phase = AgentPhase(values.pop("state", AgentPhase.WAITING_GM))
        pending = values.pop("pending", None)
        known = {f for f in cls.__dataclass_fields__ if f not in ("phase", "pending")}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"agent state has unknown fields {sorted(unknown)}")
        return cls(phase=phase, pending=None if pending is None else PendingUpload(**pending), **values)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; on any failure the old file stays intact."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some platforms cannot open a directory, which is then skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems without directory fsync
        pass
    finally:
        os.close(fd)


class AgentStateStore:
    """Reads and writes one agent's state directory (created 0700 if missing)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock_fd: int | None = None

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def global_path(self) -> Path:
        return self.directory / GLOBAL_FILE

    @property
    def local_path(self) -> Path:
        return self.directory / LOCAL_FILE

    def ensure_directory(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)
        elif not self.directory.is_dir():
            raise ConfigError(f"agent state directory {str(self.directory)!r} exists and is not a directory")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive advisory lock on the directory (ConfigError if another agent holds it)."""
        self.ensure_directory()
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another agent is running with state directory {str(self.directory)!r}; "
                    "give each agent its own --state-dir"
                ) from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # ---------------------------------------------------------------- state.json

    def load(self) -> AgentState:
        """The saved state, or a fresh one when the directory holds none."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return AgentState()
        try:
            return AgentState.from_json(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"agent state file {str(self.state_path)!r} is unreadable ({exc}); "
                "move it away to start this agent afresh (it will register again)"
            ) from None

    def save(self, state: AgentState) -> None:
        self.ensure_directory()
        text = json.dumps(state.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write(self.state_path, text.encode(), mode=0o600)

    # ---------------------------------------------------------------- models

    def save_global(self, weights: Weights, round: int) -> str:
        """Keep the global model of ``round``; returns its content hash."""
        self.ensure_directory()
        atomic_write(self.global_path, to_bytes(weights, round=round), mode=0o600)
        return content_hash(weights)

    def load_global(self) -> tuple[Weights, str] | None:
        """The held global model and its hash, or None if absent or damaged."""
        payload = _read(self.global_path)
        if payload is None:
            return None
        try:
            weights, header = from_bytes(payload)
        except SerializationError:
            return None
        return weights, header.sha256

    def save_local(self, payload: bytes) -> None:
        """Keep the upload bytes of a trained local model until the server has them."""
        self.ensure_directory()
        atomic_write(self.local_path, payload, mode=0o600)

    def load_local(self) -> bytes | None:
        """The pending upload bytes, or None if absent or damaged (then the round is retrained)."""
        payload = _read(self.local_path)
        if payload is None:
            return None
        try:
            from_bytes(payload)
        except SerializationError:
            return None
        return payload

    def clear_local(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.local_path.unlink()

    def clear_models(self) -> None:
        """Forget both models (e.g. when the server turned out to run a different run)."""
        self.clear_local()
        with contextlib.suppress(FileNotFoundError):
            self.global_path.unlink()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
