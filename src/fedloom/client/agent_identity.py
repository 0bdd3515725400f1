"""Who an agent is to the aggregator, and what it learns from it before the first round.

The join token is exchanged for a credential once, and the credential is saved at
once; a restarted agent reuses it. When the server answers 401 to a stored credential
the agent registers again, once, with its join token (or fails clearly without one).
A registration that reveals a different agent id or run means the stored state
belongs to an older run: it is dropped (:class:`RunChanged`) and the agent starts afresh.
The mode of the run (``GET /v1/status``) and, for an admin agent, the initial model
offer are part of this start-up conversation too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fedloom.client.agent_fit import checked_weights
from fedloom.client.agent_state import AgentState, AgentStateStore
from fedloom.client.trainer import Trainer
from fedloom.client.transport import AggregatorClient, AuthError, NotFoundError, UploadRejectedError
from fedloom.core.errors import ConfigError
from fedloom.core.serialization import content_hash

__all__ = ["AgentIdentity", "RunChanged"]

log = logging.getLogger("fedloom.agent")

_T = TypeVar("_T")


class RunChanged(Exception):  # noqa: N818 - internal control flow
    """Re-registration revealed a different run: drop the step in progress and start over."""


class AgentIdentity:
    """The registration, credential and start-up steps of :class:`~fedloom.client.agent.Agent`.

    A base class of Agent only: Agent's constructor sets the attributes declared here.
    """

    client: AggregatorClient
    store: AgentStateStore
    name: str
    join_token: str | None
    _state: AgentState
    _reregistered: bool
    _mode: str

    def _connect(self) -> None:
        state = self._state
        if state.agent_id and state.credential:
            self.client.authenticate(state.agent_id, state.credential)
            log.info(
                "agent %s (id %s) resuming in state %s%s",
                state.name or self.name,
                state.agent_id,
                state.phase,
                "" if state.round is None else f", round {state.round}",
            )
            return
        if not self.join_token:
            raise ConfigError(
                f"no credential in {str(self.store.directory)!r} and no join token: "
                "set FEDLOOM_AGENT_TOKEN or pass --token-file (the token made by `fedloom token create`)"
            )
        self._register()

    def _register(self) -> None:
        """Exchange the join token for a credential and save it at once; raise RunChanged if the run is new."""
        assert self.join_token is not None
        try:
            reg = self.client.register(self.name, self.join_token)
        except AuthError as exc:
            raise AuthError(
                exc.status, exc.code, f"{exc.detail} (the join token was refused: is it revoked or mistyped?)"
            ) from None
        old = self._state
        identity: dict[str, Any] = {
            "agent_id": reg["agent_id"],
            "credential": reg["credential"],
            "role": reg.get("role"),
            "run_id": reg.get("run_id"),
            "name": self.name,
        }
        changed = old.agent_id is not None and (old.agent_id != reg["agent_id"] or old.run_id != reg.get("run_id"))
        if changed:
            log.warning(
                "the aggregator now knows this agent as %s in run %s (was %s in run %s): starting afresh",
                reg["agent_id"],
                reg.get("run_id"),
                old.agent_id,
                old.run_id,
            )
            self.store.clear_models()
            self._save(AgentState(**identity))
            raise RunChanged
        self._save(old.with_(**identity))
        log.info(
            "registered as %s (agent id %s, role %s, run %s)",
            self.name,
            reg["agent_id"],
            reg.get("role"),
            reg.get("run_id"),
        )

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call the server; on a 401 to the stored credential, register again once and retry."""
        try:
            return method(*args, **kwargs)
        except AuthError as exc:
            if exc.status != 401:
                raise
            if self._reregistered or not self.join_token:
                raise AuthError(
                    exc.status,
                    exc.code,
                    f"{exc.detail} (the agent credential was refused"
                    + (" even after registering again" if self._reregistered else " and no join token was given")
                    + ")",
                ) from None
            log.warning("the aggregator refused the stored credential (%s); registering again", exc.detail)
            self._reregistered = True
            self._register()
            return method(*args, **kwargs)

    def _learn_mode(self) -> None:
        """Ask the run's mode once: in an asynchronous run a stale update is down-weighted, not wasted."""
        status = self._call(self.client.status)
        self._mode = str(status.get("mode") or "sync")
        log.info(
            "aggregator run %s: %s mode, round %s of %s",
            status.get("run_id"),
            self._mode,
            status.get("round"),
            status.get("max_rounds"),
        )

    def _offer_initial_model(self, trainer: Trainer) -> None:
        if self._state.role not in (None, "admin"):
            log.warning("not uploading the initial model: only admin agents may (this one is %r)", self._state.role)
            return
        try:
            weights, sha = self._call(self.client.download_global, "latest")
        except NotFoundError:
            pass
        else:
            log.info("the aggregator already has a global model (%s); no initial upload", sha[:12])
            self.store.save_global(weights, -1)
            self._save(self._state.with_(global_sha256=sha, global_round=None))
            return
        weights = checked_weights(trainer.get_weights(), "trainer.get_weights()")
        try:
            self._call(self.client.upload_initial, weights)
        except UploadRejectedError as exc:
            if exc.status != 409:
                raise
            log.info("another agent uploaded the initial model first (%s)", exc.detail)
            return
        log.info("uploaded the initial global model (%s)", content_hash(weights)[:12])

    def _save(self, state: AgentState) -> None:
        self.store.save(state)
        self._state = state
