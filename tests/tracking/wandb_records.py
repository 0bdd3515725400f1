"""Read a W&B offline run file (``run-*.wandb``) with wandb's own record protobuf.

wandb 0.31 ships no Python reader for its transaction log (reading moved into the Go
``wandb-core``), but it ships the ``Record`` message the file holds. The file is a
7-byte header (``:W&B``, a 2-byte magic, a version byte) then LevelDB-log framing:
32 KiB blocks of chunks, each chunk a 4-byte checksum, a 2-byte little-endian length,
a 1-byte type (1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def wait_for_exit(path: Path, timeout: float = 20.0) -> None:
    """wandb-core (a separate process) writes the file behind ``run.finish()``; wait for its exit record."""
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.1)


def history(path: Path) -> dict[int, dict[str, float]]:
    """step -> every value logged at that step."""
    steps: dict[int, dict[str, float]] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            steps[int(record.history.step.num)] = row
    return steps


def config(path: Path) -> dict[str, object]:
    """The run's config: in its ``run`` record, updated by any later ``config`` record."""
    values: dict[str, object] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in updates:
            values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def artifact_files(path: Path) -> list[tuple[str, str]]:
    """(artifact name, file path inside it) of every artifact the run logged."""
    found = []
    for record in records(path):
        if record.WhichOneof("record_type") == "artifact":
            found += [(record.artifact.name, entry.path) for entry in record.artifact.manifest.contents]
    return found
