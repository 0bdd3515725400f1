"""What the aggregator answers an agent, as Python: its refusals as exceptions, its task as TaskInfo.

:mod:`fedloom.client.transport` raises these (and re-exports them); the agent runtime
catches them by kind: :class:`AuthError` (401/403), :class:`NotFoundError` (404),
:class:`UploadRejectedError` (a refused upload, with the server's ``code``),
:class:`AggregatorUnavailableError` (retries ran out), else :class:`AggregatorError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedloom.core.errors import FedloomError, RejectedUpdateError
from fedloom.core.fit import FitConfig

__all__ = [
    "TASK_STATES",
    "AggregatorError",
    "AggregatorUnavailableError",
    "AuthError",
    "NotFoundError",
    "RequestInterruptedError",
    "TaskInfo",
    "UploadRejectedError",
    "fit_config_from",
]

log = logging.getLogger("fedloom.agent")

TASK_STATES = ("train", "wait", "finished", "secagg")
_FIT_FIELDS = frozenset(f.name for f in fields(FitConfig))


# --------------------------------------------------------------------- errors


class AggregatorError(FedloomError):
    """The aggregator refused a request. ``status`` is the HTTP status (0 when none came back),
    ``code`` the server's machine-readable ``error``, ``detail`` its explanation in words."""

    def __init__(self, status: int, code: str, detail: str, *, what: str = "") -> None:
        prefix = f"{what}: " if what else ""
        where = f"HTTP {status}" if status else "no answer"
        FedloomError.__init__(self, f"{prefix}aggregator said {code} ({where}): {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class AuthError(AggregatorError):
    """401 (credential or join token missing, invalid or revoked) or 403 (not allowed to do this)."""


class NotFoundError(AggregatorError):
    """404: e.g. no global model exists yet."""


class UploadRejectedError(AggregatorError, RejectedUpdateError):
    """An uploaded model was refused (``wrong_round``, ``duplicate``, ``round_closed``,
    ``not_selected``, ``invalid_weights``, ``invalid_payload``, ``payload_too_large``, ...)."""


class AggregatorUnavailableError(AggregatorError):
    """The aggregator could not be reached, or kept answering 5xx, for every allowed attempt."""


class RequestInterruptedError(FedloomError):
    """:meth:`AggregatorClient.interrupt` was called while a request was waiting to be retried."""


# --------------------------------------------------------------------- task


@dataclass(frozen=True)
class TaskInfo:
    """What ``GET /v1/task`` says this agent should do now (see docs/protocol.md)."""

    state: str
    round: int
    global_round: int | None = None
    global_sha256: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    deadline: str | None = None
    #: state ``secagg``: the secure-aggregation stage owed (checked by :mod:`fedloom.client.secagg_agent`)
    secagg: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> TaskInfo:
        """Parse the server's JSON, refusing anything that is not a task with a clear message."""
        if not isinstance(data, Mapping) or data.get("state") not in TASK_STATES:
            raise AggregatorError(200, "invalid_task", f"task answer is not a TaskInfo: {str(data)[:200]}")
        config = data.get("config") or {}
        if not isinstance(config, Mapping):
            raise AggregatorError(200, "invalid_task", f"task config must be an object, got {config!r}")
        secagg = data.get("secagg")
        if (data["state"] == "secagg") != isinstance(secagg, Mapping):
            raise AggregatorError(200, "invalid_task", "a task has a secagg object exactly when its state is 'secagg'")
        try:
            global_round = None if data.get("global_round") is None else int(data["global_round"])
            return cls(
                state=str(data["state"]),
                round=int(data.get("round") or 0),
                global_round=global_round,
                global_sha256=data.get("global_sha256") or None,
                config=dict(config),
                deadline=data.get("deadline"),
                secagg=None if secagg is None else dict(secagg),
            )
        except (TypeError, ValueError) as exc:
            raise AggregatorError(200, "invalid_task", f"task answer has a bad field: {exc}") from None

    def fit_config(self) -> FitConfig:
        """The round's :class:`FitConfig`; keys this fedloom does not know are ignored (with a log line)."""
        return fit_config_from(self.config, self.round)


def fit_config_from(config: Mapping[str, Any], round: int) -> FitConfig:
    """Build a FitConfig from a task's ``config`` object (``round`` fills in a missing round)."""
    unknown = sorted(set(config) - _FIT_FIELDS)
    if unknown:
        log.debug("ignoring unknown fit config keys %s", unknown)
    known = {k: v for k, v in config.items() if k in _FIT_FIELDS}
    known.setdefault("round", round)
    try:
        return FitConfig(**known)
    except TypeError as exc:
        raise AggregatorError(200, "invalid_task", f"task config does not make a FitConfig: {exc}") from None
