"""The aggregator's side of the secure-aggregation stages over HTTP: relays out, messages in.

A part of :class:`~fedloom.server.aggregator.Aggregator` (a mixin over its lock, driver
and refusal recording). Each stage message is parsed outside the lock as hostile JSON
(:mod:`fedloom.algorithms.secagg.messages` names the bad field), must name the calling
agent, and is then handed to the round's :class:`~fedloom.server.secagg_rounds.SecAggRounds`.
Every refusal is recorded in ``rejections`` with its code: ``invalid_payload`` (400, the
field), ``client_id_mismatch`` (403), ``wrong_round``/``wrong_stage``/``duplicate``/
``not_selected``/``secagg_dropped`` (409), ``bad_num_samples`` (422).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedloom.core.errors import RejectedUpdateError, ValidationError
from fedloom.core.metrics import validate_metrics
from fedloom.core.records import AgentRecord
from fedloom.server.answers import RequestRefusedError
from fedloom.server.model_serving import ModelServing
from fedloom.server.secagg_rounds import STAGES, SecAggRounds

if TYPE_CHECKING:
    from fedloom.server.rounds.secure import Contribution

#: the sender field of each stage's message
SENDER_FIELD = {"advertise": "client_id", "share": "sender", "collect": "client_id", "unmask": "client_id"}
#: body bytes a stage other than ``collect`` may take, plus this much per selected client
SMALL_STAGE_BYTES, PER_CLIENT_BYTES = 64 * 1024, 1024
#: slack beside the masked words' base64 (ids, the sample count, metrics)
COLLECT_SLACK_BYTES = 64 * 1024


class SecAggIntake(ModelServing):
    """``GET /v1/secagg/relay`` and ``POST /v1/secagg/{stage}`` (see the module docstring)."""

    refuse_upload: Callable[..., RequestRefusedError]
    _check_num_samples: Callable[..., None]
    _changed: Callable[[], None]

    def _secure_rounds(self, agent_id: str) -> SecAggRounds:
        rounds = self._state.rounds
        if not isinstance(rounds, SecAggRounds):
            detail = "this run does not use secure aggregation ([secagg] secure_aggregation = 'off')"
            raise self.refuse_upload(agent_id, "not_found", detail)
        return rounds

    def secagg_body_limit(self, agent_id: str, stage: str) -> int:
        """The most bytes a ``stage`` message may have: the masked input's size follows from the model."""
        with self._lock:
            self._driver.ensure_loaded()
            rounds = self._secure_rounds(agent_id)
            protocol, task = rounds.protocol, rounds.open_task
            selected = len(task.selected) if task is not None else 0
            if stage == "collect" and protocol is not None:
                return 4 * -(-8 * protocol.layout.length // 3) + COLLECT_SLACK_BYTES
            return SMALL_STAGE_BYTES + PER_CLIENT_BYTES * selected

    def secagg_relay(self, agent: AgentRecord) -> dict[str, Any]:
        """What ``agent`` needs for the open stage: ``{"stage", "round", "relay"}``."""
        with self._lock:
            self._driver.ensure_loaded()
            rounds = self._secure_rounds(agent.id)
            stage = rounds.stage or "advertise"
            try:
                relay = rounds.relay(agent.id, stage)
            except RejectedUpdateError as exc:
                raise self.refuse_upload(agent.id, exc.code, str(exc), rounds.current_round) from None
            return {"stage": stage, "round": rounds.current_round, "relay": relay}

    def secagg_receive(self, agent: AgentRecord, stage: str, body: bytes) -> None:
        """Parse, check and hand over one stage message of ``agent`` (refusals recorded)."""
        if stage not in STAGES:
            raise self.refuse_upload(agent.id, "not_found", f"no secure-aggregation stage {stage!r}: one of {STAGES}")
        message, claim = self._parse_stage(agent, stage, body)
        with self._lock:
            self._driver.ensure_loaded()
            rounds = self._secure_rounds(agent.id)
            if claim is not None:
                self._check_claim(agent.id, claim, message.round)
            try:
                with self._driver.recording():
                    rounds.receive(agent.id, stage, message, claim)
            except RejectedUpdateError as exc:
                raise self.refuse_upload(agent.id, exc.code, str(exc), message.round) from None
            except ValidationError as exc:  # the protocol's SecAggMessageError names the field
                raise self._invalid(agent.id, stage, exc, message.round) from None
            self._changed()
            self._driver.advance_quietly()

    def _check_claim(self, agent_id: str, claim: Contribution, round: int) -> None:
        detail = self._state.claim_problem(agent_id, claim.num_samples, self._driver.config.rounds.max_num_samples)
        if detail is not None:
            raise self.refuse_upload(agent_id, "bad_num_samples", detail, round)

    def _invalid(self, agent_id: str, stage: str, exc: Exception, round: int | None = None) -> RequestRefusedError:
        field = getattr(exc, "field", "body")
        return self.refuse_upload(agent_id, "invalid_payload", f"{stage} message: field {field!r}: {exc}", round)

    def _parse_stage(self, agent: AgentRecord, stage: str, body: bytes) -> tuple[Any, Contribution | None]:
        """The stage's message (and, for ``collect``, the claim beside it), refused by field."""
        from fedloom.algorithms.secagg import messages as m
        from fedloom.algorithms.secagg.fields import SecAggMessageError, require_object

        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise self._invalid(agent.id, stage, ValueError(f"the body is not JSON: {str(exc)[:200]}")) from None
        parsers: dict[str, Callable[[Any], Any]] = {
            "advertise": m.KeysMessage.from_json,
            "share": m.SharesMessage.from_json,
            "collect": m.MaskedInput.from_json,
            "unmask": m.UnmaskMessage.from_json,
        }
        claim = None
        try:
            if stage == "collect":
                outer = require_object(data, "collect", ("masked_input", "num_samples", "metrics"))
                data = outer["masked_input"]
            message = parsers[stage](data)
            if stage == "collect":
                claim = _claim(outer)
        except (SecAggMessageError, ValidationError) as exc:
            raise self._invalid(agent.id, stage, exc) from None
        sender = getattr(message, SENDER_FIELD[stage])
        if sender != agent.id:
            detail = f"the {stage} message names client {sender!r} but was sent by agent {agent.id!r}"
            raise self.refuse_upload(agent.id, "client_id_mismatch", detail, message.round)
        return message, claim


def _claim(outer: Any) -> Contribution:
    """The sample count and metrics beside a masked input (a ``Contribution`` of the secure round)."""
    from fedloom.algorithms.secagg.fields import SecAggMessageError
    from fedloom.server.rounds.secure import Contribution

    samples = outer["num_samples"]
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SecAggMessageError("num_samples", f"must be an integer >= 1, got {samples!r}")
    if not isinstance(outer["metrics"], dict):
        raise SecAggMessageError("metrics", "must be a JSON object of metric name -> number")
    try:
        metrics = validate_metrics(outer["metrics"])
    except ValidationError as exc:
        raise SecAggMessageError("metrics", str(exc)) from None
    return Contribution(samples, metrics)


__all__ = ["SecAggIntake"]
