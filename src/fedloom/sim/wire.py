"""Frames between the simulation driver and its worker processes: JSON header + safetensors body.

Nothing here is pickled: headers are JSON, tensors are fedloom safetensors payloads
(verified on receipt). A closed peer raises :class:`WorkerGone`, so a dead worker is
noticed at once instead of hanging the driver.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_LENGTHS = struct.Struct("<QQ")
MAX_HEADER = 64 * 1024 * 1024


class WorkerGone(ConnectionError):  # noqa: N818 (it is an event, not a programming error)
    """The peer closed its end (it exited or was killed)."""


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    """Send one frame: lengths, the JSON header, then the payload bytes."""
    head = json.dumps(header, separators=(",", ":")).encode()
    try:
        sock.sendall(_LENGTHS.pack(len(head), len(payload)) + head)
        if payload:
            sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise WorkerGone(str(exc)) from None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:], size - got)
        except ConnectionResetError:
            n = 0
        if n == 0:
            raise WorkerGone(f"peer closed the connection after {got} of {size} bytes")
        got += n
    return bytes(buffer)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Receive one frame sent by :func:`send_frame`."""
    head_len, body_len = _LENGTHS.unpack(_recv_exact(sock, _LENGTHS.size))
    if head_len > MAX_HEADER:
        raise WorkerGone(f"frame header of {head_len} bytes is implausible; the stream is corrupt")
    header = json.loads(_recv_exact(sock, head_len))
    if not isinstance(header, dict):
        raise WorkerGone("frame header is not a JSON object")
    payload = _recv_exact(sock, body_len) if body_len else b""
    return header, payload
