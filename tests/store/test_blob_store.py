"""FileBlobStore: content addressing, atomic writes, verification on read, key validation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.store import BlobStore, FileBlobStore


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_put_get_round_trip_under_the_sha256_key(blobs: FileBlobStore) -> None:
    key = blobs.put(b"model bytes")
    assert key == hashlib.sha256(b"model bytes").hexdigest()
    assert blobs.get(key) == b"model bytes"
    assert blobs.exists(key)
    assert _files(blobs.root) == [blobs.root / key[:2] / key[2:]]
    assert isinstance(blobs, BlobStore)


def test_put_is_idempotent(blobs: FileBlobStore) -> None:
    key = blobs.put(b"same")
    before = (blobs.root / key[:2] / key[2:]).stat().st_mtime_ns
    assert blobs.put(bytearray(b"same")) == key
    assert (blobs.root / key[:2] / key[2:]).stat().st_mtime_ns == before
    assert len(_files(blobs.root)) == 1


def test_put_repairs_a_truncated_blob(blobs: FileBlobStore) -> None:
    key = blobs.put(b"0123456789")
    blobs.path_for(key).write_bytes(b"01234")
    blobs.put(b"0123456789")
    assert blobs.get(key) == b"0123456789"


def test_failed_rename_leaves_no_file(blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("fedloom.store.blobs.os.replace", crash)
    with pytest.raises(StoreError, match="disk full"):
        blobs.put(b"never lands")
    assert _files(blobs.root) == []


def test_corruption_is_detected_on_read(blobs: FileBlobStore) -> None:
    key = blobs.put(b"original")
    blobs.path_for(key).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupted"):
        blobs.get(key)


def test_missing_blob_and_idempotent_delete(blobs: FileBlobStore) -> None:
    key = blobs.put(b"to delete")
    blobs.delete(key)
    blobs.delete(key)
    assert not blobs.exists(key)
    with pytest.raises(StoreError, match="missing"):
        blobs.get(key)


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "", "g" * 64, "ab/" + "c" * 61])
def test_invalid_keys_are_refused(blobs: FileBlobStore, key: str) -> None:
    for call in (blobs.get, blobs.exists, blobs.delete):
        with pytest.raises(StoreError, match="invalid blob key"):
            call(key)


def test_non_bytes_are_refused(blobs: FileBlobStore) -> None:
    with pytest.raises(StoreError, match="bytes"):
        blobs.put("text")  # type: ignore[arg-type]
