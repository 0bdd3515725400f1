"""The JSON bodies of the aggregator's HTTP API (docs/protocol.md, v1) as pydantic models.

They are the API's contract: FastAPI validates requests and answers with them and
publishes them in the OpenAPI schema (``GET /openapi.json``) under these class names,
so a renamed class or field is a protocol change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ERROR_RESPONSES",
    "STORE_ERROR_RESPONSE",
    "ErrorBody",
    "FitConfigBody",
    "HealthResponse",
    "InitialModelResponse",
    "LineageResponse",
    "LogsResponse",
    "RegisterRequest",
    "RegisterResponse",
    "SecAggStage",
    "StatusResponse",
    "TaskInfo",
    "UploadResponse",
]


class ErrorBody(BaseModel):
    error: str
    detail: str


class RegisterRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    join_token: str = Field(min_length=1, max_length=256)
    #: the agent's data size; optional, and then its uploads may claim at most this many samples
    num_samples: int | None = Field(default=None, ge=1, le=2**63 - 1)


class RegisterResponse(BaseModel):
    agent_id: str
    credential: str
    role: Literal["agent", "admin"]
    run_id: str


class FitConfigBody(BaseModel):
    round: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    extra: dict[str, Any] = Field(default_factory=dict)


class SecAggStage(BaseModel):
    """The secure-aggregation stage an agent owes an answer to (``TaskInfo.state == "secagg"``)."""

    stage: Literal["advertise", "share", "collect", "unmask"]
    round: int
    selected: list[str]
    graph_seed: int
    settings: dict[str, Any]
    #: every client enters the sum with weight 1, not its sample count (client-side DP)
    uniform_weight: bool = False


class TaskInfo(BaseModel):
    state: Literal["train", "wait", "finished", "secagg"]
    round: int
    global_round: int | None = None
    global_sha256: str | None = None
    config: FitConfigBody | None = None
    deadline: str | None = None
    secagg: SecAggStage | None = None


class UploadResponse(BaseModel):
    accepted: bool
    round: int


class LineageResponse(BaseModel):
    """A global model's lineage link and the fields it hashes (``core.lineage.LineageEntry``)."""

    run_id: str
    round: int
    model_sha256: str
    num_samples: int
    previous: str | None
    #: ``[client_id, local model sha256, num_samples]`` of each local model the link commits to
    inputs: list[tuple[str, str, int]]
    config_sha256: str
    link: str


class LogsResponse(BaseModel):
    #: records kept (fewer than sent once the agent reached its stored-log cap)
    stored: int


class InitialModelResponse(BaseModel):
    accepted: bool
    sha256: str


class StatusResponse(BaseModel):
    run_id: str
    round: int
    state: str
    mode: str
    agents: int
    selected: list[str]
    received: int
    rounds_completed: int
    max_rounds: int
    #: the open round's secure-aggregation stage (None without [secagg] or between rounds)
    secagg_stage: str | None = None


class HealthResponse(BaseModel):
    ok: bool


#: the refusals an authenticated endpoint may answer, as documented in the OpenAPI schema
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "invalid payload",
        401: "missing, invalid or revoked credential",
        403: "not allowed",
        404: "not found",
        408: "the upload body did not arrive in time",
        409: "conflict with the round state",
        413: "payload too large",
        422: "invalid weights or request",
        429: "too many refused requests: wait Retry-After seconds",
    }.items()
}
#: what ``GET /v1/health`` answers while the database is down
STORE_ERROR_RESPONSE: dict[str, Any] = {"model": ErrorBody, "description": "the database is unavailable"}
