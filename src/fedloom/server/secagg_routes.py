"""The HTTP routes of the secure-aggregation stages (docs/protocol.md, "Secure aggregation").

Thin like the rest of the API: authenticate (the same bearer credential), read the body
under a limit derived from the model's size (413, recorded) and the upload time limit,
and leave every decision to :class:`~fedloom.server.secagg_intake.SecAggIntake`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fedloom.server.answers import RequestRefusedError
from fedloom.server.app import AgentDep, AggregatorDep
from fedloom.server.http_models import ERROR_RESPONSES
from fedloom.server.request_bodies import read_small_body, upload_slot

_JSON_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
}

secagg_router = APIRouter(prefix="/v1/secagg", tags=["secagg"])


@secagg_router.get("/relay", responses=ERROR_RESPONSES)
def relay(aggregator: AggregatorDep, agent: AgentDep) -> dict[str, Any]:
    """What this agent needs for the open stage: ``{"stage", "round", "relay"}`` (keys, sealed shares,
    or the unmask request)."""
    return aggregator.secagg_relay(agent)


@secagg_router.post("/{stage}", responses=ERROR_RESPONSES, openapi_extra=_JSON_BODY)
async def stage_message(stage: str, request: Request, aggregator: AggregatorDep, agent: AgentDep) -> dict[str, Any]:
    """This agent's message for ``stage`` (advertise, share, collect, unmask) as JSON."""
    limit = await run_in_threadpool(aggregator.secagg_body_limit, agent.id, stage)
    seconds = aggregator.config.server.upload_timeout_seconds
    async with upload_slot(request, aggregator, agent):
        try:
            body = await read_small_body(request, limit, seconds)
        except RequestRefusedError as exc:
            raise await run_in_threadpool(aggregator.refuse_upload, agent.id, exc.code, exc.detail) from None
        await run_in_threadpool(aggregator.secagg_receive, agent, stage, body)
    return {"accepted": True, "stage": stage}
