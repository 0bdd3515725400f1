"""What a light agent keeps on disk, so that a restarted device neither re-registers nor double-uploads.

A state directory (0700) holds ``state.json`` (0600: it holds the credential): the agent's
identity, the last round whose update the aggregator has, and the round of an upload not
yet confirmed; ``pending.safetensors``: the exact bytes of that upload, re-sent as they
are after a restart (the aggregator answers ``duplicate`` if the first try had landed);
``global.safetensors``: the last global model, so an unchanged one is not downloaded
twice. Every file is replaced atomically (temporary file, fsync, rename), so a device
that loses power mid-write finds the old or the new version, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["LightState", "StateDir"]

VERSION = 1


@dataclass(frozen=True)
class LightState:
    """The persisted state; each change makes a new value that is saved before it is acted on."""

    name: str | None = None
    agent_id: str | None = None
    credential: str | None = None
    run_id: str | None = None
    uploaded_round: int | None = None
    uploaded_global_sha256: str | None = None
    pending_round: int | None = None
    pending_global_sha256: str | None = None
    global_sha256: str | None = None

    def with_(self, **changes: Any) -> LightState:
        return replace(self, **changes)


class StateDir:
    """Reads and writes one light agent's state directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / "state.json"
        self.pending_path = self.directory / "pending.safetensors"
        self.global_path = self.directory / "global.safetensors"

    def load(self) -> LightState:
        """The saved state, or a fresh one; a file this version cannot read is an error naming it."""
        try:
            data = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return LightState()
        except ValueError as exc:
            raise ValueError(
                f"light agent state {str(self.state_path)!r} is unreadable ({exc}); move it away"
            ) from None
        if not isinstance(data, dict) or data.pop("version", None) != VERSION:
            raise ValueError(f"light agent state {str(self.state_path)!r} is not version {VERSION}; move it away")
        known = set(LightState.__dataclass_fields__)
        if set(data) - known:
            raise ValueError(
                f"light agent state {str(self.state_path)!r} has unknown fields {sorted(set(data) - known)}"
            )
        return LightState(**data)

    def save(self, state: LightState) -> None:
        text = json.dumps({**asdict(state), "version": VERSION}, indent=2, sort_keys=True) + "\n"
        self.write(self.state_path, text.encode())

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably (mode 0600)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename durable where directories can be fsynced
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
