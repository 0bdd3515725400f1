"""``POST /v1/logs``: an agent's batch of log records, checked, scrubbed and stored.

Logs are a convenience, never worth an outage: a batch is small (200 records, 2,000
characters each, 64 KiB), an agent may send one batch per second on average (a burst of
10, its own token bucket apart from the one for refusals), its stored rows per run are
capped (:data:`fedloom.core.agent_logs.MAX_STORED_LOGS`, then a ``dropped`` marker),
and secrets are masked here as well as on the agent. Every refusal is recorded in
``rejections`` like a refused upload.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from fedloom.core.agent_logs import MAX_LOG_BODY, parse_log_batch
from fedloom.core.errors import ValidationError
from fedloom.core.records import AgentRecord
from fedloom.server.aggregator import Aggregator
from fedloom.server.answers import RequestRefusedError
from fedloom.server.limits import RateLimiter
from fedloom.server.request_bodies import read_small_body

#: log batches an agent may send per second on average, and at once
LOG_BATCHES_PER_SECOND = 1.0
LOG_BATCH_BURST = 10


def log_rate_limiter() -> RateLimiter:
    """The token buckets of ``POST /v1/logs`` (one per agent)."""
    return RateLimiter(LOG_BATCHES_PER_SECOND, LOG_BATCH_BURST)


async def receive_logs(request: Request, aggregator: Aggregator, agent: AgentRecord) -> int:
    """Read, check and store one batch; returns the records stored (fewer than sent past the cap)."""
    limiter: RateLimiter = request.app.state.log_limiter
    if not limiter.spend(f"logs:{agent.id}"):
        detail = f"more than {LOG_BATCH_BURST} log batches at once or {LOG_BATCHES_PER_SECOND:g} per second"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "rate_limited", detail)
    try:
        body = await read_small_body(request, MAX_LOG_BODY)
    except RequestRefusedError as exc:
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, exc.code, exc.detail) from None
    return await run_in_threadpool(store_logs, aggregator, agent, body)


def store_logs(aggregator: Aggregator, agent: AgentRecord, body: bytes) -> int:
    """The checks needing no I/O, then one store write."""
    try:
        entries = parse_log_batch(json.loads(body), datetime.now(UTC))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and ValidationError are ValueErrors
        detail = str(exc) if isinstance(exc, ValidationError) else f"the body is not JSON: {str(exc)[:200]}"
        raise aggregator.refuse_upload(agent.id, "invalid_payload", f"log batch: {detail}") from None
    return aggregator.store.append_agent_logs(aggregator.run_id, agent.name, entries)
