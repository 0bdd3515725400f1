"""Reading request bodies under limits: size (while reading), time, and one upload slot per agent.

A body is the one thing a client controls in both size and speed, so every endpoint
that takes one reads it here: oversized bodies are refused as soon as they cross the
limit (never buffered whole), slow ones when their time is up, and an upload body is
read only while holding one of the app's upload slots (at most one per agent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from fedloom.core.records import AgentRecord
from fedloom.server.aggregator import Aggregator, RequestRefusedError, refusal
from fedloom.server.limits import AgentBusyError, UploadSlots

log = logging.getLogger("fedloom.aggregator")

#: the largest JSON body an unauthenticated endpoint (registration) reads: a name and a token fit 100 times
MAX_SMALL_BODY = 16 * 1024
#: seconds an unauthenticated body may take to arrive
SMALL_BODY_SECONDS = 10.0


async def refuse_declared_oversize(request: Request, aggregator: Aggregator, agent: AgentRecord) -> None:
    """Refuse (413, recorded) a body whose declared length is over the limit, before anything is read."""
    limit = aggregator.config.server.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        detail = f"request body of {declared} bytes is over the limit of {limit} bytes"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "payload_too_large", detail)


async def read_body(request: Request, aggregator: Aggregator, agent: AgentRecord) -> bytes:
    """The request body, refused (and recorded) with 413 as soon as it exceeds the upload limit,
    and with 408 when it has not fully arrived within ``[server] upload_timeout_seconds``."""
    await refuse_declared_oversize(request, aggregator, agent)
    limit = aggregator.config.server.max_upload_bytes
    seconds = aggregator.config.server.upload_timeout_seconds
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    detail = f"request body is over the limit of {limit} bytes"
                    raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "payload_too_large", detail)
                chunks.append(chunk)
    except TimeoutError:
        detail = f"the request body did not arrive within {seconds:g} s ({received} bytes received)"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "upload_timeout", detail) from None
    except ClientDisconnect:
        detail = f"the client disconnected after sending {received} bytes of the request body"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "upload_incomplete", detail) from None
    return b"".join(chunks)


@asynccontextmanager
async def upload_slot(request: Request, aggregator: Aggregator, agent: AgentRecord) -> AsyncIterator[None]:
    """One of the app's upload slots for ``agent``'s body; a second upload of the same agent is refused."""
    slots: UploadSlots = request.app.state.upload_slots
    try:
        async with slots.hold(agent.id):
            yield
    except AgentBusyError:
        detail = "this agent already has an upload being received: wait for its answer before sending again"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "upload_in_progress", detail) from None


async def read_small_body(request: Request, limit: int = MAX_SMALL_BODY, seconds: float = SMALL_BODY_SECONDS) -> bytes:
    """A small body of an unauthenticated request: 413 past ``limit`` bytes (checked while reading),
    408 when it takes longer than ``seconds``. Not recorded in ``rejections`` (no agent is known);
    logged, and counted by the rate limiter like every refusal."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _small_refusal("payload_too_large", f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _small_refusal("payload_too_large", f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _small_refusal("upload_timeout", f"the request body did not arrive within {seconds:g} s") from None
    except ClientDisconnect:
        raise _small_refusal("upload_incomplete", "the client disconnected before sending the body") from None
    return b"".join(chunks)


def _small_refusal(code: str, detail: str) -> RequestRefusedError:
    log.info("refused an unauthenticated request body: %s (%s)", code, detail)
    return refusal(code, detail)
