"""Synchronous rounds under secure aggregation, driven by the wall clock (docs/protocol.md).

:class:`SecAggRounds` is :class:`~fedloom.server.rounds.SyncRounds` with the extra stages
of SecAgg+ between a round's opening and its close. When the engine opens a round, a
:class:`~fedloom.algorithms.secagg.server.SecAggServerRound` is made for its selection;
each stage closes when every client still in the protocol answered it or at its
deadline (``[secagg] stage_timeout_seconds``; the masked-input stage, in which clients
train, keeps ``[rounds] deadline_seconds`` when set), and who did not answer has dropped
out. Once the protocol is done (or failed) the round ends through the same helper as a
simulated secure round, :meth:`fedloom.server.rounds.secure.SecureRounds.finish`: it
records the dropouts (``secagg_dropped``), enters the global model plus the unmasked
mean delta into the engine as one merged partial sum, so recording, the server optimiser
and the lineage stay the one path every round takes, and the round closes at once; a
round the protocol refuses (too few left, a secret that cannot be rebuilt, sample claims
that disagree with the unmasked total, fewer inputs than ``[rounds] min_updates``) is
recorded with the reason and abandoned: never a wrong model.

The protocol's state lives in this process only: an aggregator restarted mid-round
abandons that round with a recorded reason (``secagg_restarted``) and opens the next.
The protocol modules need the ``secagg`` extra, so they are imported when a round opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fedloom.algorithms.secagg import SecAggSettings
from fedloom.algorithms.secagg.compat import uniform_weights
from fedloom.core.errors import RejectedUpdateError
from fedloom.core.update import ClientUpdate
from fedloom.server.engine import RoundEngine
from fedloom.server.rounds import ClientTask, ClosePolicy, Event, RoundAbandoned, RoundClosed, RoundOpened, SyncRounds
from fedloom.server.rounds.events import StageAdvanced

if TYPE_CHECKING:
    from fedloom.algorithms.secagg.server import SecAggServerRound
    from fedloom.server.rounds.secure import Contribution

STAGES = ("advertise", "share", "collect", "unmask")
#: the rejection codes of this lifecycle beside the protocol's (docs/protocol.md)
DROPPED, RESTARTED, BELOW_MINIMUM = "secagg_dropped", "secagg_restarted", "secagg_below_min_updates"


class StageRefusedError(RejectedUpdateError):
    """A stage message refused before the protocol read it: ``code`` is the protocol's, ``field`` the part."""

    def __init__(self, code: str, reason: str, field: str = "") -> None:
        super().__init__(code, reason)
        self.field = field


class SecAggRounds(SyncRounds):
    """A synchronous federation whose rounds run SecAgg+ (see the module docstring)."""

    def __init__(self, engine: RoundEngine, policy: ClosePolicy, settings: SecAggSettings) -> None:
        super().__init__(engine, policy)
        self.settings = settings
        self.protocol: SecAggServerRound | None = None
        self.stage_deadline: float | None = None
        self.answered: set[str] = set()
        self.claims: dict[str, Contribution] = {}
        self._closing = False  # the protocol is done: the next decision closes the round from its sum
        self._may_open = True

    # -- what agents are told ----------------------------------------------------------
    @property
    def stage(self) -> str | None:
        """The open round's stage (``advertise`` ... ``unmask``), or None between rounds."""
        protocol = self.protocol
        if self.open_task is None or protocol is None or protocol.stage.value not in STAGES:
            return None
        return str(protocol.stage.value)

    def task_for(self, client_id: str) -> ClientTask:
        """``train`` while ``client_id`` owes the open stage an answer (the aggregator names the stage)."""
        task, stage = self.open_task, self.stage
        if self.finished or task is None:
            return super().task_for(client_id)
        protocol = self.protocol
        if (
            stage is not None
            and protocol is not None
            and client_id in protocol.active
            and client_id not in self.answered
        ):
            return ClientTask("train", task.round, self.engine.fit_config(client_id), self.stage_deadline)
        return ClientTask("wait", task.round, None, self.stage_deadline)

    def stage_info(self, client_id: str) -> dict[str, Any] | None:
        """What an agent owing the open stage needs to run its side (``TaskInfo.secagg``), or None."""
        task, stage = self.open_task, self.stage
        if task is None or stage is None or self.task_for(client_id).state != "train":
            return None
        return {
            "stage": stage,
            "round": task.round,
            "selected": list(task.selected),
            "graph_seed": self.engine.seed,
            "settings": self.settings.describe(),
            "uniform_weight": uniform_weights(self.engine.strategy),
        }

    def relay(self, client_id: str, stage: str) -> dict[str, Any]:
        """What the server forwards to ``client_id`` for ``stage`` (keys, sealed shares, the unmask request)."""
        protocol = self._require(client_id, stage, None)
        if stage == "share":
            return protocol.keys_for(client_id).to_json()
        if stage == "collect":
            return protocol.shares_for(client_id).to_json()
        if stage == "unmask":
            return protocol.unmask_request().to_json()
        raise StageRefusedError("wrong_stage", "stage 'advertise' has nothing to relay: send your keys", "stage")

    # -- receiving ---------------------------------------------------------------------
    def _require(self, client_id: str, stage: str, round: int | None) -> SecAggServerRound:
        """Refuse, with the protocol's code, a message that cannot be for the open stage."""
        task, protocol = self.open_task, self.protocol
        if task is None or protocol is None or self.stage is None:
            raise StageRefusedError("round_closed", "no secure-aggregation round is open", "round")
        if round is not None and round != task.round:
            raise StageRefusedError("wrong_round", f"round is {round} but round {task.round} is open", "round")
        if client_id not in protocol.graph:
            raise StageRefusedError("not_selected", f"agent {client_id!r} is not selected in round {task.round}")
        if client_id not in protocol.active:
            gone = protocol.dropped.get(client_id, "?")
            raise StageRefusedError(DROPPED, f"agent {client_id!r} dropped out at stage {gone!r}", "client_id")
        if stage != self.stage:
            raise StageRefusedError("wrong_stage", f"round {task.round} is at stage {self.stage!r}, not {stage!r}")
        return protocol

    def receive(self, client_id: str, stage: str, message: Any, claim: Contribution | None = None) -> None:
        """Hand ``message`` (already parsed, naming ``client_id``) to the protocol, or raise why not.

        The protocol's own refusals are :class:`~fedloom.algorithms.secagg.fields.SecAggMessageError`
        naming the field; nothing changes when a message is refused."""
        protocol = self._require(client_id, stage, message.round)
        if client_id in self.answered:
            raise StageRefusedError("duplicate", f"agent {client_id!r} already answered stage {stage!r}", "client_id")
        receivers: dict[str, Callable[[Any], None]] = {
            "advertise": protocol.receive_keys,
            "share": protocol.receive_shares,
            "collect": protocol.receive_masked,
            "unmask": protocol.receive_unmask,
        }
        receivers[stage](message)
        self.answered.add(client_id)
        if claim is not None:
            self.claims[client_id] = claim

    def submit(self, update: ClientUpdate) -> None:
        """A plain upload is refused (recorded): this run takes masked inputs only."""
        reason = "this run uses secure aggregation: send a masked input (POST /v1/secagg/collect), not an update"
        self._record(update.round, update.client_id, "secagg_required", reason)
        raise RejectedUpdateError("secagg_required", reason)

    def _record(self, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        if self.engine.recorder is not None:
            self.engine.recorder.update_rejected(round, client_id, code, reason)

    # -- time --------------------------------------------------------------------------
    def tick(self, now: float, *, may_open: bool = True) -> list[Event]:
        if self._closing:  # finish()'s own tick: the caller's may_open (enough agents) still holds
            may_open = self._may_open
        else:
            self._may_open = may_open
        events = super().tick(now, may_open=may_open)
        for event in events:  # a round opened by finish()'s own tick is started there already
            if isinstance(event, RoundOpened) and (self.protocol is None or self.protocol.round != event.round):
                self._start(event, now)
        return events

    def _secure(self) -> Any:
        from fedloom.server.rounds.secure import SecureRounds  # needs the secagg extra

        return SecureRounds(self, self.settings)

    def _start(self, opened: RoundOpened, now: float) -> None:
        self.protocol = self._secure().start()
        self.answered, self.claims = set(), {}
        self.stage_deadline = now + self._timeout("advertise")

    def _timeout(self, stage: str) -> float:
        training = self.policy.deadline_seconds
        if stage == "collect" and training is not None:
            return training
        timeout = self.settings.stage_timeout_seconds
        return 30.0 if timeout is None else timeout

    def _decide(self, now: float) -> list[Event]:
        protocol = self.protocol
        if self._closing:
            return self._close()
        if protocol is None or self.open_task is None or protocol.round != self.open_task.round:
            return self._abandon(RESTARTED, "the round has no secure-aggregation state in this process")
        waiting = protocol.active - self.answered
        deadline = self.stage_deadline
        if waiting and (deadline is None or now < deadline) and self.open_task.selected:
            return []
        before = set(protocol.dropped)
        stage = protocol.close_stage()
        dropped = tuple(sorted(set(protocol.dropped) - before))
        if protocol.failure is None and stage.value != "done":
            self.answered = set()
            self.stage_deadline = now + self._timeout(stage.value)
            return [StageAdvanced(protocol.round, stage.value, self.stage_deadline, dropped)]
        self.protocol, self.stage_deadline, self._deadline = None, None, None
        self._closing = True  # finish() submits the unmasked sum and ticks: _close answers that tick
        try:
            events: list[Event] = self._secure().finish(protocol, self.claims, now)
        finally:
            self._closing = False
        return events

    def _close(self) -> list[Event]:
        """Close the round from the merged sum finish() submitted (``[rounds] min_updates`` still holds)."""
        task = self.open_task
        assert task is not None
        need = self.policy.minimum(len(task.selected))
        if self.engine.received() < need:
            why = f"{self.engine.received()} masked input(s) were unmasked, [rounds] min_updates needs {need}"
            return self._abandon(BELOW_MINIMUM, f"round {task.round} refused: {why}")
        return [RoundClosed(self.engine.close_round(min_updates=need))]

    def _abandon(self, code: str, reason: str) -> list[Event]:
        """Record why the open round gives no model, and abandon it (the next starts from the same model)."""
        self._record(self.current_round, None, code, reason)
        received = self.engine.received()
        number = self.engine.abandon_round()
        self.protocol, self.stage_deadline, self._deadline = None, None, None
        return [RoundAbandoned(number, received)]

    def resume(self, selected: Sequence[str], opened_at: float, updates: Iterable[ClientUpdate]) -> None:
        """A round left open by an earlier process: its protocol state is gone, so it is abandoned (recorded)."""
        recorder, self.engine.recorder = self.engine.recorder, None
        try:
            self.engine.open_round(selected=selected)
        finally:
            self.engine.recorder = recorder
        self.protocol = None
        reason = "the aggregator restarted mid-round; secure aggregation keeps its state in memory, so it is abandoned"
        self._abandon(RESTARTED, f"round {self.current_round}: {reason}")
