"""Content-addressed model blobs on the local filesystem.

A blob's key is the SHA-256 of its bytes, so the same model stored twice takes the
space of one, a key can never point at different data, and corruption is detected on
every read. Writes go through a temporary file in the target directory, ``fsync`` and
``os.replace``: a process killed mid-write leaves at worst a stray ``.tmp-*`` file,
never a half-written blob under a real key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from fedloom.core.errors import IntegrityError, StoreError

_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"


@runtime_checkable
class BlobStore(Protocol):
    """What the SQL store needs from a blob backend (filesystem now, S3 later)."""

    def put(self, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by its owner only: model blobs are as
    sensitive as the data they were trained on. An existing directory keeps its mode."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):
            missing.mkdir(mode=0o700)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")


def blob_key(data: bytes) -> str:
    """The key a blob is stored under: the lowercase SHA-256 hex digest of its bytes."""
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """Return ``key`` if it is 64 lowercase hex digits; anything else could escape the root."""
    if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
        raise StoreError(f"invalid blob key {key!r}: expected 64 lowercase hex characters (a SHA-256 digest)")
    return key


class FileBlobStore:
    """Blobs under ``root/ab/cdef...`` (the first two hex digits name a sub-directory).

    The two-level layout keeps directories small when a simulation stores many
    thousands of local models.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """Where the blob with ``key`` lives (validated, so it is always inside ``root``)."""
        check_key(key)
        return self.root / key[:2] / key[2:]

    def put(self, data: bytes) -> str:
        """Store ``data`` atomically and return its key; a no-op when it is already stored."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"blob data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        key = blob_key(data)
        path = self.path_for(key)
        # Same key and same size means same content; a truncated leftover is rewritten.
        if path.is_file() and path.stat().st_size == len(data):
            return key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
        except OSError as exc:
            raise StoreError(f"could not write blob {key} under {self.root}: {exc}") from exc
        return key

    def get(self, key: str) -> bytes:
        """The blob's bytes, verified against its key so on-disk corruption never goes unnoticed."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {key} is missing from {self.root}") from None
        except OSError as exc:
            raise StoreError(f"could not read blob {key} from {self.root}: {exc}") from exc
        actual = blob_key(data)
        if actual != key:
            raise IntegrityError(f"blob {key} in {self.root} is corrupted: its bytes hash to {actual}")
        return data

    def exists(self, key: str) -> bool:
        """True when a blob with ``key`` is stored (its content is not verified here)."""
        return self.path_for(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error, so clean-ups can be retried."""
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"could not delete blob {key} from {self.root}: {exc}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync it, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; skipped where directories cannot be opened (Windows)."""
    flag = getattr(os, "O_DIRECTORY", None)
    if flag is None:
        return
    fd = os.open(directory, os.O_RDONLY | flag)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
