"""What the aggregator answers, independent of HTTP: refusals with their protocol status, tasks.

:class:`RequestRefusedError` carries the HTTP status docs/protocol.md gives each
refusal code, so the aggregator decides the answer and the HTTP layer only renders it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fedloom.core.errors import FedloomError

#: HTTP status of every refusal code (docs/protocol.md)
STATUS_OF: dict[str, int] = {
    "invalid_payload": 400,
    "upload_incomplete": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "client_id_mismatch": 403,
    "unknown_client": 403,
    "certificate_required": 403,
    "certificate_mismatch": 403,
    "not_found": 404,
    "upload_timeout": 408,
    "wrong_round": 409,
    "wrong_stage": 409,
    "secagg_dropped": 409,
    "secagg_required": 409,
    "not_selected": 409,
    "duplicate": 409,
    "round_closed": 409,
    "model_exists": 409,
    "upload_in_progress": 409,
    "name_taken": 409,
    "agent_limit": 403,
    "payload_too_large": 413,
    "invalid_weights": 422,
    "bad_num_samples": 422,
    "rate_limited": 429,
    "busy": 503,
}


class RequestRefusedError(FedloomError):
    """A request the aggregator refused: ``status`` (HTTP), ``code`` (machine) and ``detail`` (words)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def refusal(code: str, detail: str) -> RequestRefusedError:
    """The refusal for ``code`` with its protocol status."""
    return RequestRefusedError(STATUS_OF.get(code, 400), code, detail)


@dataclass(frozen=True)
class Registration:
    """What ``POST /v1/agents/register`` answers."""

    agent_id: str
    credential: str
    role: str
    run_id: str


TaskState = Literal["train", "wait", "finished", "secagg"]


@dataclass(frozen=True)
class AgentTask:
    """What one agent should do now (the protocol's ``TaskInfo``)."""

    state: TaskState
    round: int
    global_round: int | None = None
    global_sha256: str | None = None
    config: Mapping[str, Any] | None = None
    deadline: str | None = None
    #: for state ``secagg``: the stage an agent owes an answer to (docs/protocol.md, "Secure aggregation")
    secagg: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "round": self.round,
            "global_round": self.global_round,
            "global_sha256": self.global_sha256,
            "config": None if self.config is None else dict(self.config),
            "deadline": self.deadline,
            "secagg": None if self.secagg is None else dict(self.secagg),
        }
