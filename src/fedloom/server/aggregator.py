"""The deployment aggregator: the state behind the HTTP API of docs/protocol.md.

:class:`Aggregator` is a facade: it drives the round lifecycle shared with simulation
(:mod:`fedloom.server.rounds`) with the wall clock, holds its in-memory state in a
:class:`~fedloom.server.run_state.RunState`, and answers the HTTP layer
(:mod:`fedloom.server.app`, which only authenticates, reads bodies and maps errors).
Every decision is taken under one lock.

**The database is the commit point** (:mod:`fedloom.server.run_driver`): a process
killed at any moment, or a store write failing half-way, ends in a reload from the store.

Global model rows: round 0 holds the initial model and round ``r`` the model that
round ``r`` produced, which is the model that *starts* round ``r + 1`` (what
``GET /v1/models/global/{r + 1}`` serves). An abandoned round writes no model; the
next round starts from the same one.

Every refused request that carried a model is recorded in the store's rejections
table with a machine code, and raises :class:`RequestRefusedError` carrying the HTTP
status of docs/protocol.md; a refusal changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedloom.algorithms.compression_settings import compression_of
from fedloom.algorithms.strategy import Strategy
from fedloom.core.errors import PayloadTooLargeError, RejectedUpdateError, SerializationError, ValidationError
from fedloom.core.observe import RoundObserver, RunEnd
from fedloom.core.records import AgentRecord
from fedloom.core.serialization import MAX_ROUND, from_bytes
from fedloom.core.store_protocols import DeploymentStore
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, validate_weights
from fedloom.server.answers import AgentTask, Registration, RequestRefusedError, refusal
from fedloom.server.changes import ChangeNotifier
from fedloom.server.config import AggregatorConfig
from fedloom.server.limits import RejectionBudget, shorten
from fedloom.server.registration import Registrar
from fedloom.server.resume import LifecycleFactory, RunContext
from fedloom.server.round_watchers import RoundWatchers
from fedloom.server.rounds import SyncRounds
from fedloom.server.run_driver import RunDriver
from fedloom.server.run_setup import RUN_KIND, deployment_strategy, fail_start, open_run
from fedloom.server.secagg_intake import SecAggIntake
from fedloom.server.semi_global_rounds import federation_synthesis
from fedloom.server.served_model import load_initial_model
from fedloom.server.system_meter import AggregatorMeter, MeteredRecorder, ProcessSampler
from fedloom.server.uploads import ParsedUpload, UploadRefusedError, as_local_model, parse_update

log = logging.getLogger("fedloom.aggregator")


class Aggregator(SecAggIntake):
    """The aggregator's state manager: registration, tasks, uploads, rounds, deadlines, resume.

    Thread-safe: public methods take one lock; request bodies are parsed outside it.
    ``clock`` returns wall-clock seconds (deadlines are wall-clock times, reported to agents).
    ``initial_weights`` is used when the run has no global model yet and the config names
    no ``initial_model`` file; otherwise an admin agent uploads it.
    """

    def __init__(
        self,
        config: AggregatorConfig,
        store: DeploymentStore,
        *,
        clock: Callable[[], float] = time.time,
        initial_weights: Weights | None = None,
        observers: Sequence[RoundObserver] = (),
        system_sampler: ProcessSampler | None = None,
        strategy: Strategy | None = None,
        lifecycle: LifecycleFactory | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._lock = threading.RLock()
        self._changes = ChangeNotifier()
        self._strategy = strategy or deployment_strategy(config)  # an edge passes its relay's (server/edge_rounds.py)
        self._compression = compression_of(self._strategy)  # [client] compression: uploads are decoded
        self.run_id, self.resumed = open_run(config, store)
        self.meter = AggregatorMeter(system_sampler)
        self._rejections = RejectionBudget(config.server.max_rejections_per_round)
        self._recorder = MeteredRecorder(
            self.meter, store, self.run_id, self._rejections, self._current_round, keep_local_models=True
        )
        synthesis = federation_synthesis(config, store, self.run_id)  # [federation]: the semi-global model
        run = RunContext(config, store, self.run_id, self._strategy, self._recorder, lifecycle, synthesis)
        self._registrar = Registrar(store, self.run_id, config.rounds.max_num_samples)
        self._driver = RunDriver(run, self._strategy, clock, self._changes.bump)
        self._driver.watchers = RoundWatchers(observers)  # told after each recorded round, off this thread
        self._driver.watchers.started(self._driver.run_info())
        try:
            with self._lock:
                self._driver.load()
                if self._state.latest is None:
                    weights = initial_weights
                    if config.run.initial_model is not None:
                        weights = load_initial_model(config.run.initial_model)
                    if weights is not None:
                        self._driver.set_initial(weights)
                self._driver.advance(self._clock())
        except Exception as exc:
            fail_start(store, self.run_id, exc)
            raise

    # ------------------------------------------------------------------ the run

    @property
    def mode(self) -> str:
        return self.config.run.mode

    @property
    def current_round(self) -> int:
        """The open round, or the next one to open."""
        with self._lock:
            return self._current_round()

    @property
    def reported_round(self) -> int:
        """The round ``/v1/status`` names: the open (or next) round, the last one once finished."""
        with self._lock:
            state = self._state
            return state.rounds_completed() if state.finished() else state.current_round()

    @property
    def round_deadline(self) -> float | None:
        """The open synchronous round's deadline (clock seconds), or None."""
        with self._lock:
            rounds = self._state.rounds
            return rounds.deadline if isinstance(rounds, SyncRounds) else None

    def close(self, status: str = "interrupted") -> None:
        """Stop: wake every long-poll and mark an unfinished run ``interrupted`` (a restart resumes it)."""
        self._changes.close()
        with self._lock:
            if self._driver.finished_at is None:
                self.store.finish_run(self.run_id, status, {"rounds_completed": self._state.rounds_completed()})
                self._driver.watchers.finished(self._driver.run_info(), RunEnd(status, self._state.rounds_completed()))
        self._driver.watchers.close()

    def wake_waiters(self) -> None:
        """Make every long-poll answer now (used when the server shuts down)."""
        self._changes.close()

    # ------------------------------------------------------------------ agents

    def register(self, name: str, join_token: str, num_samples: int | None = None) -> Registration:
        """Exchange a join token for an agent credential; the same name again keeps its agent id
        (refusals: :mod:`fedloom.server.registration`)."""
        agent, credential, declared = self._registrar.register(name, join_token, num_samples)
        with self._lock:
            self._driver.ensure_loaded()
            self._state.declared[agent.id] = declared
            self._admit(agent)
            self._driver.advance_quietly()
        log.info("agent %s registered as %s (%s)", name, agent.id, agent.role)
        return Registration(agent.id, credential, agent.role, self.run_id)

    def _admit(self, agent: AgentRecord) -> None:
        if self._state.admit(agent):
            self._changed()

    def revoked_agents(self) -> frozenset[str]:
        """Agents whose join token was revoked (``fedloom token revoke``, maybe by another process).

        Reads the store (one indexed query) and takes them out of the run: they count no
        more towards ``min_agents``, are never selected again, and an open round stops
        waiting for them. The round logic calls it at every tick; a revoked agent that
        registers again with a re-issued token comes back through :meth:`register`.
        """
        with self._lock:
            return self._driver.drop_revoked()

    def _check_num_samples(self, agent_id: str, update: ClientUpdate) -> None:
        """Refuse (recorded, ``bad_num_samples``) an upload claiming more than its agent declared
        or than ``[rounds] max_num_samples``."""
        detail = self._state.claim_problem(agent_id, update.num_samples, self.config.rounds.max_num_samples)
        if detail is not None:
            raise self.refuse_upload(agent_id, "bad_num_samples", detail, update.round)

    def authenticate(self, credential: str) -> AgentRecord | None:
        """The agent of this run holding ``credential``, or None (unknown, replaced, revoked, other run)."""
        agent = self._registrar.authenticate(credential)
        if agent is None:
            return None
        with self._lock:
            if agent.id not in self._state.agents:  # registered through another process sharing the store
                self._state.declared[agent.id] = self._registrar.declared_size(agent.id)
                self._admit(agent)
        return agent

    @property
    def agents(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._state.agents))

    # ------------------------------------------------------------------ tasks and long-poll

    def task_for(self, agent_id: str) -> AgentTask:
        """What ``agent_id`` should do now."""
        with self._lock:
            self._driver.ensure_loaded()
            return self._state.task_for(agent_id)

    def _task_and_version(self, agent_id: str) -> tuple[AgentTask, int]:
        with self._lock:
            self._driver.ensure_loaded()
            return self._state.task_for(agent_id), self._changes.version

    async def wait_for_change(self, agent_id: str, timeout: float) -> AgentTask:
        """The agent's task as soon as it differs from the current one, or after ``timeout`` seconds.

        Waits in the event loop (no thread is held while waiting); state is read in a
        worker thread because the lock may be held by a store write. A task the agent can
        act on (``train``, ``finished``) is answered at once: the change it would wait for
        may have happened between the agent's previous poll and this one.
        """
        task, version = await asyncio.to_thread(self._task_and_version, agent_id)
        if task.state in ("train", "finished", "secagg"):
            return task
        end = time.monotonic() + max(0.0, timeout)
        while (left := end - time.monotonic()) > 0:
            seen = await self._changes.wait(version, left)
            if seen == version:  # timed out, or the server is shutting down
                break
            latest, version = await asyncio.to_thread(self._task_and_version, agent_id)
            if latest != task:
                return latest
        return task

    def _changed(self) -> None:
        self._changes.bump()

    # ------------------------------------------------------------------ uploads

    def refuse_upload(
        self, agent_id: str | None, code: str, detail: str, round: int | None = None
    ) -> RequestRefusedError:
        """Record a refused upload in the rejections table (within the agent's budget for the round)
        and return the error to raise."""
        known = round if round is not None and 0 <= round <= MAX_ROUND else None
        detail = shorten(detail)
        with self._lock:
            current = self._current_round()
        reason = self._rejections.admit(agent_id, current, detail)
        if reason is not None:  # at most max_rejections_per_round + 1 rows per agent and round
            self.store.record_rejection(self.run_id, known, agent_id, code, reason)
        log.info("refused an upload from %s: %s (%s)", agent_id, code, detail)
        return refusal(code, detail)

    def check_may_upload(self, agent_id: str) -> None:
        """Refuse (recorded) an upload before its body is read when it could not be accepted now.

        Called before an upload slot is taken, so an agent that is not selected, has
        already uploaded, or finds no round open cannot hold a slot with a body that
        would be refused anyway. The engine checks again (with the round) on submit.
        """
        with self._lock:
            self._driver.ensure_loaded()
            problem, round_no = self._state.upload_problem(agent_id), self._state.current_round()
        if problem is not None:
            raise self.refuse_upload(agent_id, problem[0], problem[1], round_no)

    def _parse(self, agent_id: str, body: bytes) -> ParsedUpload:
        """The checked parts of an upload (hashed once, here); refusals are recorded."""
        try:
            return parse_update(body, self.config.server.max_upload_bytes)
        except UploadRefusedError as exc:
            raise self.refuse_upload(agent_id, exc.code, exc.detail, exc.round) from None

    def submit_update(self, agent: AgentRecord, body: bytes) -> int:
        """Accept an update upload (``POST /v1/updates``) and return its round, or raise a recorded refusal.

        The update keeps its verified hash and its bytes as received: the store writes those."""
        self.meter.received(len(body))
        upload = self._parse(agent.id, body)
        round_no = upload.round
        if upload.client_id != agent.id:
            detail = f"the update names client {upload.client_id!r} but was sent by agent {agent.id!r}"
            raise self.refuse_upload(agent.id, "client_id_mismatch", detail, round_no)
        with self._lock:
            self._driver.ensure_loaded()
            update = self._client_update(agent.id, self._as_local_model(agent.id, upload))
            self._check_num_samples(agent.id, update)
            self.meter.expect(agent.id, agent.name, upload.system)  # stored with the accepted update
            self._submit(update)
            self._changed()
            self._driver.advance_quietly()
        return round_no

    def _as_local_model(self, agent_id: str, upload: ParsedUpload) -> ParsedUpload:
        """A compressed upload decoded against the open round's global model (:func:`as_local_model`)."""
        rounds = self._state.rounds  # compression runs are synchronous (server/run_setup.py)
        open_task = rounds.open_task if isinstance(rounds, SyncRounds) else None
        start = open_task.global_weights if open_task is not None and open_task.round == upload.round else None
        try:
            return as_local_model(upload, start, self._compression)
        except UploadRefusedError as exc:
            raise self.refuse_upload(agent_id, exc.code, exc.detail, exc.round) from None

    def _client_update(self, agent_id: str, upload: ParsedUpload) -> ClientUpdate:
        try:
            parts = (upload.weights, upload.num_samples, upload.metrics, upload.sha256, upload.payload)
            return ClientUpdate(agent_id, upload.round, *parts)
        except ValidationError as exc:
            raise self.refuse_upload(agent_id, "invalid_payload", f"the update header is invalid: {exc}") from None

    def _submit(self, update: ClientUpdate) -> None:
        rounds = self._state.rounds
        if rounds is None:
            raise self.refuse_upload(update.client_id, "round_closed", "no round is open: the run has no model yet")
        try:
            with self._driver.recording():
                rounds.submit(update)  # the lifecycle records its own refusals
        except RejectedUpdateError as exc:
            log.info("refused an update from %s: %s (%s)", update.client_id, exc.code, exc)
            raise refusal(exc.code, str(exc)) from None

    def upload_initial(self, agent: AgentRecord, body: bytes) -> str:
        """Accept the initial model from an admin agent while the run has none; returns its hash."""
        if agent.role != "admin":
            raise self.refuse_upload(agent.id, "forbidden", "only admin agents may upload the initial model")
        try:
            weights, _ = from_bytes(body, max_bytes=self.config.server.max_upload_bytes)
        except PayloadTooLargeError as exc:
            raise self.refuse_upload(agent.id, "payload_too_large", str(exc)) from None
        except SerializationError as exc:
            raise self.refuse_upload(agent.id, "invalid_payload", str(exc)) from None
        try:
            validate_weights(weights)
        except ValidationError as exc:
            raise self.refuse_upload(agent.id, "invalid_weights", str(exc)) from None
        with self._lock:
            self._driver.ensure_loaded()
            if self._state.latest is not None:
                raise self.refuse_upload(agent.id, "model_exists", "the run already has a global model", 0)
            with self._driver.recording():
                sha256 = self._driver.set_initial(weights)
            self._driver.advance_quietly()
            return sha256

    def set_initial_model(self, weights: Weights) -> str | None:
        """Record ``weights`` as global model 0 unless the run has one; its hash, or None if it had one.

        For an edge aggregator, whose first model comes from its upstream aggregator, not an agent."""
        validate_weights(weights)
        with self._lock:
            self._driver.ensure_loaded()
            if self._state.latest is not None:
                return None
            with self._driver.recording():
                sha256 = self._driver.set_initial(weights)
            self._driver.advance_quietly()
            return sha256

    # ------------------------------------------------------------------ rounds

    def tick(self, now: float | None = None) -> None:
        """Apply deadlines, close rounds whose criteria hold, open the next, finish the run."""
        with self._lock:
            self._driver.ensure_loaded()
            self._driver.advance(self._clock() if now is None else now)  # reads revocations first

    # ------------------------------------------------------------------ status

    def may_stop(self, now: float | None = None) -> bool:
        """Whether a finished run's server may exit (:meth:`RunDriver.may_stop`)."""
        with self._lock:
            return self._driver.may_stop(self._clock() if now is None else now)

    def _current_round(self) -> int:
        return self._state.current_round()

    def status(self) -> dict[str, Any]:
        """The run's state for ``GET /v1/status``."""
        with self._lock:
            self._driver.ensure_loaded()
            return self._state.status(self.run_id, self.mode, self.config.rounds.max_rounds)


__all__ = [
    "RUN_KIND",
    "AgentTask",
    "Aggregator",
    "Registration",
    "RequestRefusedError",
    "deployment_strategy",
    "load_initial_model",
    "refusal",
]
