"""The aggregator's HTTP API (docs/protocol.md, v1) as a FastAPI app around an :class:`Aggregator`.

This layer authenticates (bearer credentials), reads request bodies with a size
limit enforced while reading, long-polls without blocking a thread, and turns every
refusal into ``{"error": CODE, "detail": TEXT}`` with the protocol's status. All
state and every decision live in the aggregator; blocking calls (the store) run in
worker threads so the event loop stays free for long-polls.

A background task calls :meth:`Aggregator.tick` every ``check_interval_seconds`` so
deadlines fire even when no request arrives.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fedloom.core.records import AgentRecord
from fedloom.server.aggregator import Aggregator, refusal
from fedloom.server.http_errors import install_error_handlers
from fedloom.server.http_models import (
    ERROR_RESPONSES,
    STORE_ERROR_RESPONSE,
    HealthResponse,
    InitialModelResponse,
    LineageResponse,
    LogsResponse,
    RegisterRequest,
    RegisterResponse,
    StatusResponse,
    TaskInfo,
    UploadResponse,
)
from fedloom.server.limits import RateLimiter, UploadSlots, address_key, rate_limited_refusal
from fedloom.server.log_intake import log_rate_limiter, receive_logs
from fedloom.server.peer_identity import identity_refusal
from fedloom.server.request_bodies import read_body, read_small_body, refuse_declared_oversize, upload_slot

log = logging.getLogger("fedloom.aggregator")

SHA256_HEADER = "X-Fedloom-Sha256"
MAX_WAIT_SECONDS = 60
_OCTET = "application/octet-stream"
_BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {_OCTET: {"schema": {"type": "string", "format": "binary"}}},
    }
}
#: a round in a path: 1-10 ASCII digits (rounds are below 2**31)
_ROUND_PATH = re.compile(r"[0-9]{1,10}")


# --------------------------------------------------------------------- dependencies


def get_aggregator(request: Request) -> Aggregator:
    """The aggregator this app serves (set by :func:`create_app`)."""
    aggregator: Aggregator = request.app.state.aggregator
    return aggregator


AggregatorDep = Annotated[Aggregator, Depends(get_aggregator)]
_bearer = HTTPBearer(auto_error=False, description="the agent credential from POST /v1/agents/register")


def check_certificate(request: Request, aggregator: Aggregator, name: str, agent_id: str | None) -> None:
    """With mutual TLS, refuse (403, recorded) a caller whose client certificate is not agent ``name``'s."""
    if aggregator.config.tls.client_ca_file is None:
        return
    problem = identity_refusal(request.scope, name)
    if problem is not None:
        raise aggregator.refuse_upload(agent_id, problem[0], f"agent {name!r}: {problem[1]}")


def current_agent(
    request: Request,
    aggregator: AggregatorDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AgentRecord:
    """The authenticated agent; a sync dependency, so the store lookup runs in a worker thread.

    An address whose refusals used up its rate limit gets 429 instead of 401; an agent that
    used up its own gets 429 before its request does any work."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise rate_limited_refusal(request, address_key(request)) or refusal(
            "unauthorized", "send 'Authorization: Bearer <credential>' (from POST /v1/agents/register)"
        )
    agent = aggregator.authenticate(credentials.credentials)
    if agent is None:
        raise rate_limited_refusal(request, address_key(request)) or refusal(
            "unauthorized", "the credential is unknown, replaced or revoked: register again"
        )
    request.state.rate_key = f"agent:{agent.id}"
    limited = rate_limited_refusal(request, request.state.rate_key)
    if limited is not None:
        raise limited
    check_certificate(request, aggregator, agent.name, agent.id)
    return agent


AgentDep = Annotated[AgentRecord, Depends(current_agent)]


# --------------------------------------------------------------------- endpoints

router = APIRouter(prefix="/v1")


@router.get("/health", response_model=HealthResponse, responses={503: STORE_ERROR_RESPONSE}, tags=["meta"])
def health(aggregator: AggregatorDep) -> HealthResponse:
    """Readiness check, no credential needed: 200 only while the database answers (503 ``store_unavailable``
    otherwise), so a load balancer or monitor sees an aggregator that cannot record anything as down."""
    aggregator.store.ping()
    return HealthResponse(ok=True)


@router.post(
    "/agents/register",
    response_model=RegisterResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RegisterRequest.model_json_schema()}},
        }
    },
    tags=["agents"],
)
async def register(request: Request, aggregator: AggregatorDep) -> RegisterResponse:
    """Exchange a join token for an agent credential (same name again: same agent id, new credential).

    Unauthenticated, so every call spends a token of its address's rate limit and its body is
    read with a small size limit (413) before it is parsed."""
    limiter: RateLimiter = request.app.state.rate_limiter
    if not limiter.spend(address_key(request)):
        raise rate_limited_refusal(request, address_key(request)) or refusal("rate_limited", "too many registrations")
    try:
        body = RegisterRequest.model_validate_json(await read_small_body(request))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    if aggregator.config.tls.client_ca_file is not None:  # mutual TLS: the certificate must be this name's
        await run_in_threadpool(check_certificate, request, aggregator, body.name, None)
    done = await run_in_threadpool(aggregator.register, body.name, body.join_token, body.num_samples)
    return RegisterResponse.model_validate(
        {"agent_id": done.agent_id, "credential": done.credential, "role": done.role, "run_id": done.run_id}
    )


@router.get("/task", response_model=TaskInfo, responses=ERROR_RESPONSES, tags=["rounds"])
async def task(
    aggregator: AggregatorDep,
    agent: AgentDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="long-poll seconds")] = 0,
) -> TaskInfo:
    """This agent's task; with ``wait`` it answers as soon as the task changes (or after ``wait`` s)."""
    current = await aggregator.wait_for_change(agent.id, wait)
    return TaskInfo.model_validate(current.to_json())


@router.get(
    "/models/global/{round}",
    response_class=Response,
    responses={200: {"content": {_OCTET: {}}, "description": "safetensors bytes"}, **ERROR_RESPONSES},
    tags=["models"],
)
def global_model(round: str, aggregator: AggregatorDep, agent: AgentDep) -> Response:
    """The global model that starts ``round`` (1 = the initial model), or ``latest``."""
    payload, sha256 = aggregator.global_model_bytes(_round_in_path(round), agent.id)
    aggregator.meter.served(len(payload))
    headers = {SHA256_HEADER: sha256, "content-length": str(len(payload))}
    return StreamingResponse(_chunks(payload), media_type=_OCTET, headers=headers)


@router.get("/lineage/{round}", response_model=LineageResponse, responses=ERROR_RESPONSES, tags=["models"])
def lineage(round: str, aggregator: AggregatorDep, agent: AgentDep) -> LineageResponse:
    """The lineage link of the global model ``/models/global/{round}`` serves, with the fields it hashes."""
    return LineageResponse.model_validate(aggregator.lineage_entry(_round_in_path(round)).to_json())


def _round_in_path(round: str) -> int | Literal["latest"]:
    if round == "latest":
        return "latest"
    if _ROUND_PATH.fullmatch(round):  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        return int(round)
    raise refusal("not_found", f"round must be a positive integer or 'latest', got {round!r}")


#: bytes per body message of a model download
DOWNLOAD_CHUNK = 1 << 18


async def _chunks(payload: bytes) -> AsyncIterator[memoryview]:
    """The shared payload in slices, so the server waits for each slow client instead of
    copying the rest of the model into that connection's write buffer: memory per
    download is one chunk, not one model, however many agents download at once."""
    view = memoryview(payload)
    for start in range(0, len(view), DOWNLOAD_CHUNK):
        yield view[start : start + DOWNLOAD_CHUNK]


@router.post(
    "/models/initial",
    response_model=InitialModelResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_BINARY_BODY,
    tags=["models"],
)
async def initial_model(request: Request, aggregator: AggregatorDep, agent: AgentDep) -> InitialModelResponse:
    """Admin agents only, while the run has no global model."""
    if agent.role != "admin":  # refuse before reading a body that would be thrown away
        detail = "only admin agents may upload the initial model"
        raise await run_in_threadpool(aggregator.refuse_upload, agent.id, "forbidden", detail)
    async with upload_slot(request, aggregator, agent):
        body = await read_body(request, aggregator, agent)
    sha256 = await run_in_threadpool(aggregator.upload_initial, agent, body)
    return InitialModelResponse(accepted=True, sha256=sha256)


@router.post(
    "/updates",
    response_model=UploadResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_BINARY_BODY,
    tags=["rounds"],
)
async def updates(request: Request, aggregator: AggregatorDep, agent: AgentDep) -> UploadResponse:
    """Upload a local model (a fedloom safetensors payload naming this agent and the round)."""
    # identity (the dependency), the right to upload now and the declared size are checked before a
    # slot is taken, so an agent that would be refused anyway never holds one
    await run_in_threadpool(aggregator.check_may_upload, agent.id)
    await refuse_declared_oversize(request, aggregator, agent)
    async with upload_slot(request, aggregator, agent):
        body = await read_body(request, aggregator, agent)
        round_no = await run_in_threadpool(aggregator.submit_update, agent, body)
    return UploadResponse(accepted=True, round=round_no)


@router.post("/logs", response_model=LogsResponse, responses=ERROR_RESPONSES, tags=["agents"])
async def logs(request: Request, aggregator: AggregatorDep, agent: AgentDep) -> LogsResponse:
    """Ship a batch of this agent's log records: ``{"records": [{created_at, level, logger, message}]}``."""
    return LogsResponse(stored=await receive_logs(request, aggregator, agent))


@router.get("/status", response_model=StatusResponse, responses=ERROR_RESPONSES, tags=["meta"])
def status(aggregator: AggregatorDep, agent: AgentDep) -> StatusResponse:
    """The run's round, state, mode and counts."""
    return StatusResponse(**aggregator.status())


# --------------------------------------------------------------------- the app


#: uploads read and folded in at the same time. Each holds one model body while it is
#: parsed and streamed into the round's accumulator, so the aggregator's memory is
#: O(UPLOAD_SLOTS x model) however many agents upload at once; the others wait with
#: their bytes in the kernel's socket buffers. One agent holds at most one slot, and
#: only after its credential and its right to upload now were checked.
UPLOAD_SLOTS = 4


def create_app(
    aggregator: Aggregator,
    *,
    background_tick: bool = True,
    upload_slots: int = UPLOAD_SLOTS,
    on_done: Callable[[], None] | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The v1 API over ``aggregator``; ``background_tick=False`` leaves ticking to the caller (tests).

    ``extra_routers`` are included as given (``fedloom server`` passes the dashboard's, which this
    package must not import: it reads the store).

    ``on_done`` is called once, from the ticker, when the run is finished and the server
    may stop (:meth:`Aggregator.may_stop`): ``fedloom server`` exits then."""
    interval = aggregator.config.rounds.check_interval_seconds

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(aggregator, interval, on_done)) if background_tick else None
        try:
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
                with suppress(asyncio.CancelledError):
                    await ticker

    app = FastAPI(
        title="fedloom aggregator",
        version="1",
        description="The fedloom wire protocol v1 (docs/protocol.md).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.aggregator = aggregator
    app.state.upload_slots = UploadSlots(upload_slots)
    server = aggregator.config.server
    app.state.rate_limiter = RateLimiter(server.rate_limit_per_second, server.rate_limit_burst)
    app.state.log_limiter = log_rate_limiter()
    install_error_handlers(app)
    app.include_router(router)
    from fedloom.server.secagg_routes import secagg_router  # it imports this module's dependencies

    app.include_router(secagg_router)
    for extra in extra_routers:
        app.include_router(extra)
    return app


async def _tick_forever(aggregator: Aggregator, interval: float, on_done: Callable[[], None] | None) -> None:
    """Call ``tick`` every ``interval`` seconds; a failing tick is logged and tried again."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(aggregator.tick)
        except Exception:  # a supervisor loop: one failed tick must not stop deadlines for good
            log.exception("aggregator tick failed; trying again in %.1f s", interval)
        if on_done is not None and await run_in_threadpool(aggregator.may_stop):
            on_done()
            on_done = None
