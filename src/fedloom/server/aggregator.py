"""The deployment aggregator: the state behind the HTTP API of docs/protocol.md.

:class:`Aggregator` owns a store, a :class:`RoundEngine` (synchronous mode) or an
:class:`AsyncRounds` buffer (asynchronous mode), and a clock. The HTTP layer
(:mod:`fedloom.server.app`) only authenticates, reads bodies and maps errors; every
decision is taken here, under one lock.

**The database is the commit point.** A global model is written only after its
aggregation succeeded, a local model before it counts, and at start the aggregator
rebuilds its state from what the store holds: the newest global model, the open
round (its recorded selection, its recorded local models re-submitted to the engine
without being recorded again), the agents and their credentials. So a process killed
at any moment resumes at the last completed round with exactly one global model per
round. The same reload runs if a store write fails half-way through a state change,
so memory never stays ahead of the database.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.strategy import RoundCriteria, Strategy
from fedloom.core.errors import (
    ConfigError,
    IntegrityError,
    PayloadTooLargeError,
    RegistrationRefusedError,
    RejectedUpdateError,
    SerializationError,
    StoreError,
    ValidationError,
)
from fedloom.core.records import AgentRecord as AgentLike  # the stored agent record (was a mirror protocol)
from fedloom.core.serialization import MAX_ROUND, content_hash, from_bytes, from_plain_bytes, to_bytes
from fedloom.core.store_protocols import DeploymentStore
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, validate_weights
from fedloom.server.answers import AgentTask, Registration, RequestRefusedError, refusal
from fedloom.server.changes import ChangeNotifier
from fedloom.server.config import AggregatorConfig
from fedloom.server.limits import BudgetedRecorder, RejectionBudget, shorten
from fedloom.server.resume import RunContext, load_async, load_sync
from fedloom.server.rounds import (
    AsyncLifecycle,
    DeadlineExtended,
    Event,
    RoundAbandoned,
    RoundClosed,
    RoundOpened,
    RunFinished,
    SyncRounds,
)
from fedloom.server.uploads import UploadRefusedError, parse_update

log = logging.getLogger("fedloom.aggregator")

RUN_KIND = "deployment"
#: run settings a restarted aggregator must not change (they decide selection and weighting)
_FIXED_SETTINGS = (("run", "mode"), ("run", "seed"), ("async", "buffer_size"), ("strategy", "strategy"))


@dataclass(frozen=True)
class _Model:
    """A global model held in memory: the newest one, which most downloads ask for."""

    weights: Weights
    sha256: str
    round: int
    num_samples: int

    def payload(self) -> bytes:
        return to_bytes(self.weights, round=self.round, num_samples=self.num_samples)


def _read_only(weights: Weights) -> Weights:
    for array in weights.values():
        array.flags.writeable = False
    return weights


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_initial_model(path: str | Path) -> Weights:
    """The weights in ``path``: a fedloom payload (``to_bytes``) or a raw safetensors file."""
    file = Path(path)
    where = f"[run] initial_model {str(file)!r}"
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc} (set initial_model to a safetensors file)") from None
    try:
        weights, _ = from_bytes(data)
    except IntegrityError as exc:
        raise ConfigError(f"{where} is corrupt: {exc}") from None
    except SerializationError:
        try:
            weights = from_plain_bytes(data)
        except SerializationError as exc:
            raise ConfigError(f"{where} is not a safetensors file fedloom can load: {exc}") from None
    try:
        validate_weights(weights)
    except ValidationError as exc:
        raise ConfigError(f"{where} holds an unusable model: {exc}") from None
    return weights


def deployment_strategy(config: AggregatorConfig) -> Strategy:
    """The ``[strategy]`` with the config's selection, client settings and round criteria (the
    lifecycle's close policy applies them, with the deadline: :func:`fedloom.server.resume.close_policy`)."""
    rounds, client, chosen = config.rounds, config.client, config.strategy
    return build_strategy(
        chosen.strategy,
        fraction=rounds.fraction,
        min_clients=rounds.min_agents,
        epochs=client.epochs,
        batch_size=client.batch_size,
        lr=client.lr,
        criteria=RoundCriteria(threshold=rounds.threshold, min_updates=rounds.min_updates),
        aggregator=chosen.aggregator,
        server_opt=chosen.server_opt,
        params=chosen.params(),
    )


class Aggregator:
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
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._lock = threading.RLock()
        self._changes = ChangeNotifier()
        self._strategy = deployment_strategy(config)
        self.run_id, self.resumed = self._open_run()
        self._rejections = RejectionBudget(config.server.max_rejections_per_round)
        self._recorder = BudgetedRecorder(
            store, self.run_id, self._rejections, self._current_round, keep_local_models=True
        )
        self._run = RunContext(config, store, self.run_id, self._strategy, self._recorder)
        self._agents: dict[str, AgentLike] = {}
        #: declared data sizes (``POST /v1/agents/register`` num_samples) and revoked agents
        self._declared: dict[str, int | None] = {}
        self._revoked: set[str] = set()
        self._latest: _Model | None = None
        self._latest_payload: bytes | None = None
        self._rounds: SyncRounds | AsyncLifecycle | None = None
        self._run_finished = False
        self._finished_at: float | None = None
        self._fetched_final: set[str] = set()
        self._stale = False
        try:
            with self._lock:
                self._load()
                if self._latest is None:
                    weights = initial_weights
                    if config.run.initial_model is not None:
                        weights = load_initial_model(config.run.initial_model)
                    if weights is not None:
                        self._set_initial(weights)
                self._advance(self._clock())
        except Exception as exc:
            self._fail_start(exc)
            raise

    def _fail_start(self, exc: Exception) -> None:
        """Mark the run ``failed`` with the reason when the start fails after the run was opened
        (e.g. read-only blobs), instead of leaving it ``running`` with no aggregator behind it."""
        reason = f"the aggregator failed to start: {type(exc).__name__}: {exc}"
        try:
            self.store.finish_run(self.run_id, "failed", {"error": reason})
        except StoreError:
            log.exception("could not mark run %s failed", self.run_id)

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
    def round_deadline(self) -> float | None:
        """The open synchronous round's deadline (clock seconds), or None."""
        with self._lock:
            return self._rounds.deadline if isinstance(self._rounds, SyncRounds) else None

    def _open_run(self) -> tuple[str, bool]:
        """Resume the newest unfinished run of this name, or start one; returns (run id, resumed)."""
        name = self.config.run.name
        found = self.store.find_run(name, kind=RUN_KIND)
        if found is not None and found.status != "finished":
            stored = found.config or {}
            for table, key in _FIXED_SETTINGS:
                if table == "async" and self.mode != "async":
                    continue
                before = (stored.get(table) or {}).get(key)
                now = self.config.to_dict()[table][key]
                if before is not None and before != now:
                    raise ConfigError(
                        f"run {name!r} was started with [{table}] {key} = {before!r}; it cannot resume with {now!r}"
                        f" (set {key} back, or start a new run with another [run] name)"
                    )
            self.store.reopen_run(found.id)
            log.info("resuming run %s (%s)", name, found.id[:8])
            return found.id, True
        run_id = self.store.create_run(name, RUN_KIND, self.config.to_record(), self.config.run.seed)
        log.info("started run %s (%s)", name, run_id[:8])
        return run_id, False

    def close(self, status: str = "interrupted") -> None:
        """Stop: wake every long-poll and mark an unfinished run ``interrupted`` (a restart resumes it)."""
        self._changes.close()
        with self._lock:
            if not self._run_finished:
                self.store.finish_run(self.run_id, status, {"rounds_completed": self._rounds_completed()})

    def wake_waiters(self) -> None:
        """Make every long-poll answer now (used when the server shuts down)."""
        self._changes.close()

    # ------------------------------------------------------------------ loading (start and recovery)

    def _load(self) -> None:
        """Rebuild every piece of in-memory state from the store (the commit point)."""
        self._stale = True
        self._agents = {a.id: a for a in self.store.list_agents(self.run_id)}
        self._revoked = set()
        self._declared = {c.client_id: c.num_samples for c in self.store.list_clients(self.run_id)}
        self._latest, self._latest_payload, self._rounds = None, None, None
        models = self.store.list_global_models(self.run_id)
        if models:
            newest = models[-1]
            weights = _read_only(self.store.load_global_model(self.run_id, newest.round))
            self._latest = _Model(weights, newest.sha256, newest.round, newest.num_samples)
            if self.mode == "sync":
                self._rounds = load_sync(self._run, newest, weights, list(self._agents))
            else:
                self._rounds = load_async(self._run, newest, weights)
        self.revoked_agents()  # after the open round resumed with its recorded selection
        self._stale = False

    def _ensure_loaded(self) -> None:
        """Reload after a failed store write left memory possibly ahead of the database."""
        if self._stale:
            self._load()

    @contextmanager
    def _recording(self) -> Iterator[None]:
        """Around a state change that writes to the store: if a write fails, reload from the store."""
        try:
            yield
        except StoreError:
            log.exception("a store write failed; reloading the state from the store")
            self._stale = True
            try:
                self._load()
            except StoreError:
                log.exception("reloading failed; the next request tries again")
            raise

    # ------------------------------------------------------------------ the global model

    def _set_initial(self, weights: Weights) -> None:
        """Record the initial model as global model 0 (the commit point), then start rounds.

        State a strategy keeps inside the model (SCAFFOLD's control variate, FedCurv's
        Fisher sums) joins it here, so it is stored, sent and restored with every global model."""
        validate_weights(weights)
        weights = self._strategy.initial_weights(weights)
        stored = {k: np.array(v, copy=True) for k, v in weights.items()}
        self.store.save_global_model(self.run_id, 0, stored, 0)
        self._set_latest(_Model(_read_only(stored), content_hash(stored), 0, 0))
        if self.mode == "sync":
            self._rounds = self._run.sync_rounds(stored, 1, list(self._agents))
        else:
            self._rounds = self._run.async_rounds(stored, 0)
        log.info("initial model recorded (%s)", self._latest.sha256[:12] if self._latest else "")
        self._changed()

    def _set_latest(self, model: _Model) -> None:
        self._latest, self._latest_payload = model, None

    def global_model_bytes(self, round: int | Literal["latest"], agent_id: str | None = None) -> tuple[bytes, str]:
        """The payload of the global model that starts ``round`` (or the newest), and its content hash.

        ``agent_id`` (who asks) lets a finished run know which agents have its final model."""
        with self._lock:
            self._ensure_loaded()
            latest = self._latest
            if latest is None:
                raise refusal("not_found", "the run has no global model yet")
            current = self._current_round()
            if round != "latest" and not 1 <= round <= current:
                raise refusal("not_found", f"round {round} has not started (rounds run from 1 to {current})")
            row = latest.round if round == "latest" else round - 1
            if row >= latest.round:
                if self._run_finished and agent_id is not None:
                    self._fetched_final.add(agent_id)
                if self._latest_payload is None:
                    self._latest_payload = latest.payload()
                return self._latest_payload, latest.sha256
        # an older model: the newest row at or before ``row`` (abandoned rounds wrote none)
        models = [m for m in self.store.list_global_models(self.run_id) if m.round <= row]
        if not models:
            raise refusal("not_found", f"no global model starts round {round}")
        record = models[-1]
        weights = self.store.load_global_model(self.run_id, record.round)
        return to_bytes(weights, round=record.round, num_samples=record.num_samples), record.sha256

    # ------------------------------------------------------------------ agents

    def register(self, name: str, join_token: str, num_samples: int | None = None) -> Registration:
        """Exchange a join token for an agent credential; the same name again keeps its agent id.

        A name registered with another token is refused (``name_taken``), as is a new name
        beyond the token's ``max_agents`` (``agent_limit``) and a declared data size over
        ``[rounds] max_num_samples``; each refusal is recorded and changes nothing else.
        ``num_samples`` (optional, fixed at the first registration in a run) caps what the
        agent's uploads may claim.
        """
        token = self.store.verify_join_token(join_token)
        if token is None:
            raise refusal("unauthorized", "the join token is unknown or revoked (ask the aggregator's admin)")
        limit = self.config.rounds.max_num_samples
        if num_samples is not None and not 1 <= num_samples <= limit:
            detail = f"agent {name!r} declares {num_samples} samples; [rounds] max_num_samples allows 1 to {limit}"
            raise self._refuse_registration(name, "bad_num_samples", detail)
        try:
            agent, credential = self.store.register_agent(self.run_id, name, token)
        except RegistrationRefusedError as exc:
            raise self._refuse_registration(name, exc.code, str(exc)) from None
        self.store.register_client(self.run_id, agent.id, num_samples)
        declared = {c.client_id: c.num_samples for c in self.store.list_clients(self.run_id)}
        with self._lock:
            self._ensure_loaded()
            self._declared[agent.id] = declared.get(agent.id)
            self._admit(agent)
            self._advance_quietly()
        log.info("agent %s registered as %s (%s)", name, agent.id, agent.role)
        return Registration(agent.id, credential, agent.role, self.run_id)

    def _refuse_registration(self, name: str, code: str, detail: str) -> RequestRefusedError:
        """Record a refused registration (client id: the agent name asked for) and return the error."""
        self.store.record_rejection(self.run_id, None, name, code, detail)
        log.info("refused to register agent %s: %s (%s)", name, code, detail)
        return refusal(code, detail)

    def _admit(self, agent: AgentLike) -> None:
        new = agent.id not in self._agents
        self._agents[agent.id] = agent
        self._revoked.discard(agent.id)
        if new:
            if isinstance(self._rounds, SyncRounds):
                self._rounds.add_client(agent.id)
            self._changed()

    def revoked_agents(self) -> frozenset[str]:
        """Agents whose join token was revoked (``fedloom token revoke``, maybe by another process).

        Reads the store (one indexed query) and takes them out of the run: they count no
        more towards ``min_agents``, are never selected again, and an open round stops
        waiting for them. The round logic calls it at every tick; a revoked agent that
        registers again with a re-issued token comes back through :meth:`register`.
        """
        revoked = frozenset(self.store.revoked_agent_ids(self.run_id))
        with self._lock:
            for agent_id in revoked - self._revoked:
                self._agents.pop(agent_id, None)
                if isinstance(self._rounds, SyncRounds):
                    self._rounds.remove_client(agent_id)
                log.info("agent %s: its join token was revoked; it is out of the run", agent_id)
                self._changed()
            self._revoked = set(revoked)
        return revoked

    def _check_num_samples(self, agent_id: str, update: ClientUpdate) -> None:
        """Refuse (recorded, ``bad_num_samples``) an upload claiming more than its agent declared
        or than ``[rounds] max_num_samples``: FedAvg weighs by the claim, so 2**62 would be the model."""
        limit = self.config.rounds.max_num_samples
        declared = self._declared.get(agent_id)
        if declared is not None and update.num_samples > declared:
            detail = f"the update claims {update.num_samples} samples but agent {agent_id} declared {declared}"
        elif update.num_samples > limit:
            detail = f"the update claims {update.num_samples} samples; [rounds] max_num_samples is {limit}"
        else:
            return
        raise self.refuse_upload(agent_id, "bad_num_samples", detail, update.round)

    def authenticate(self, credential: str) -> AgentLike | None:
        """The agent of this run holding ``credential``, or None (unknown, replaced, revoked, other run)."""
        agent = self.store.authenticate(credential)
        if agent is None or agent.run_id != self.run_id:
            return None
        with self._lock:
            if agent.id not in self._agents:  # registered through another process sharing the store
                declared = {c.client_id: c.num_samples for c in self.store.list_clients(self.run_id)}
                self._declared[agent.id] = declared.get(agent.id)
                self._admit(agent)
        return agent

    @property
    def agents(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._agents))

    # ------------------------------------------------------------------ tasks and long-poll

    def task_for(self, agent_id: str) -> AgentTask:
        """What ``agent_id`` should do now."""
        with self._lock:
            self._ensure_loaded()
            return self._task_unlocked(agent_id)

    def _task_and_version(self, agent_id: str) -> tuple[AgentTask, int]:
        with self._lock:
            self._ensure_loaded()
            return self._task_unlocked(agent_id), self._changes.version

    def _task_unlocked(self, agent_id: str) -> AgentTask:
        latest, rounds = self._latest, self._rounds
        if latest is None or rounds is None:
            return AgentTask("wait", 1)
        current = rounds.current_round
        if rounds.finished:
            return AgentTask("finished", rounds.rounds_completed, current, latest.sha256)
        task = rounds.task_for(agent_id)
        if task.state == "train" and not self._open_for_agents():
            return AgentTask("wait", current, current, latest.sha256)
        deadline = None if task.deadline is None else _iso(task.deadline)
        fit = None if task.fit is None else asdict(task.fit)
        return AgentTask(task.state, task.round, current, latest.sha256, fit, deadline)

    async def wait_for_change(self, agent_id: str, timeout: float) -> AgentTask:
        """The agent's task as soon as it differs from the current one, or after ``timeout`` seconds.

        Waits in the event loop (no thread is held while waiting); state is read in a
        worker thread because the lock may be held by a store write. A task the agent can
        act on (``train``, ``finished``) is answered at once: the change it would wait for
        may have happened between the agent's previous poll and this one.
        """
        task, version = await asyncio.to_thread(self._task_and_version, agent_id)
        if task.state in ("train", "finished"):
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
            self._ensure_loaded()
            problem, round_no = self._upload_problem(agent_id), self._current_round()
        if problem is not None:
            raise self.refuse_upload(agent_id, problem[0], problem[1], round_no)

    def _upload_problem(self, agent_id: str) -> tuple[str, str] | None:
        rounds = self._rounds
        if self._latest is None or rounds is None:
            return "round_closed", "no round is open: the run has no model yet"
        if rounds.finished:
            return "round_closed", "the run is finished"
        if isinstance(rounds, AsyncLifecycle):
            return None if self._open_for_agents() else ("round_closed", "no round is open: waiting for agents")
        task = rounds.open_task
        if task is None:
            return "round_closed", f"round {rounds.current_round} is not open"
        if agent_id not in task.selected:
            return "not_selected", f"agent {agent_id!r} is not selected in round {task.round}"
        if agent_id in rounds.engine.received_from():
            return "duplicate", f"agent {agent_id!r} already has an update accepted in round {task.round}"
        return None

    def _parse(self, agent_id: str, body: bytes) -> tuple[Weights, int, int, dict[str, float], str]:
        """Weights, round, num_samples, metrics and the named client of an upload; refusals are recorded."""
        try:
            upload = parse_update(body, self.config.server.max_upload_bytes)
        except UploadRefusedError as exc:
            raise self.refuse_upload(agent_id, exc.code, exc.detail, exc.round) from None
        return upload.weights, upload.round, upload.num_samples, upload.metrics, upload.client_id

    def submit_update(self, agent: AgentLike, body: bytes) -> int:
        """Accept an update upload (``POST /v1/updates``) and return its round, or raise a recorded refusal."""
        weights, round_no, num_samples, metrics, client_id = self._parse(agent.id, body)
        if client_id != agent.id:
            detail = f"the update names client {client_id!r} but was sent by agent {agent.id!r}"
            raise self.refuse_upload(agent.id, "client_id_mismatch", detail, round_no)
        try:
            update = ClientUpdate(agent.id, round_no, weights, num_samples, metrics)
        except ValidationError as exc:
            raise self.refuse_upload(agent.id, "invalid_payload", f"the update header is invalid: {exc}") from None
        with self._lock:
            self._ensure_loaded()
            self._check_num_samples(agent.id, update)
            self._submit(update)
            self._changed()
            self._advance_quietly()
        return round_no

    def _submit(self, update: ClientUpdate) -> None:
        rounds = self._rounds
        if rounds is None:
            raise self.refuse_upload(update.client_id, "round_closed", "no round is open: the run has no model yet")
        try:
            with self._recording():
                rounds.submit(update)  # the lifecycle records its own refusals
        except RejectedUpdateError as exc:
            log.info("refused an update from %s: %s (%s)", update.client_id, exc.code, exc)
            raise refusal(exc.code, str(exc)) from None

    def upload_initial(self, agent: AgentLike, body: bytes) -> str:
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
            self._ensure_loaded()
            if self._latest is not None:
                raise self.refuse_upload(agent.id, "model_exists", "the run already has a global model", 0)
            with self._recording():
                self._set_initial(weights)
            self._advance_quietly()
            assert self._latest is not None
            return self._latest.sha256

    # ------------------------------------------------------------------ rounds

    def tick(self, now: float | None = None) -> None:
        """Apply deadlines, close rounds whose criteria hold, open the next, finish the run."""
        with self._lock:
            self._ensure_loaded()
            self.revoked_agents()
            self._advance(self._clock() if now is None else now)

    def _advance_quietly(self) -> None:
        """Advance after a request's own change succeeded: a failure here must not fail that request."""
        try:
            self._advance(self._clock())
        except StoreError:
            log.exception("advancing the run failed; the next tick tries again")

    def _advance(self, now: float) -> None:
        """Tick the lifecycle at ``now`` and apply what happened (a new global model, the finish)."""
        rounds = self._rounds
        if rounds is None:
            return
        with self._recording():
            events = rounds.tick(now, may_open=self._open_for_agents())
        for event in events:
            self._apply(event)
        if events:
            self._changed()

    def _apply(self, event: Event) -> None:
        if isinstance(event, RoundClosed):
            outcome = event.outcome
            weights = _read_only(outcome.weights)
            self._set_latest(_Model(weights, content_hash(weights), outcome.round, outcome.num_samples))
            missing = f", missing {', '.join(outcome.missing)}" if outcome.missing else ""
            log.info("round %d: aggregated %d update(s)%s", outcome.round, outcome.num_updates, missing)
        elif isinstance(event, RoundOpened):
            log.info("round %d: opened, selected %s", event.round, ", ".join(event.selected))
        elif isinstance(event, RoundAbandoned):
            log.info("round %d: abandoned at its deadline with %d update(s)", event.round, event.num_updates)
        elif isinstance(event, DeadlineExtended):
            log.info("round %d: deadline passed with %d update(s); extended", event.round, event.received)
        elif isinstance(event, RunFinished) and not self._run_finished:
            self._finish_run()

    def _finish_run(self) -> None:
        completed = self._rounds_completed()
        self.store.finish_run(self.run_id, "finished", {"rounds_completed": completed})
        self._run_finished = True
        self._finished_at = self._clock()
        log.info("run finished after %d round(s)", completed)

    # ------------------------------------------------------------------ status

    def may_stop(self, now: float | None = None) -> bool:
        """Whether a finished run's server may exit: every agent has downloaded the final model, or
        ``[server] linger_seconds`` passed since the finish (for agents that never ask again)."""
        with self._lock:
            if not self._run_finished or self._finished_at is None:
                return False
            moment = self._clock() if now is None else now
            everyone = set(self._agents) <= self._fetched_final
            return everyone or moment - self._finished_at >= self.config.server.linger_seconds

    def _current_round(self) -> int:
        return self._rounds.current_round if self._rounds is not None else 1

    def _rounds_completed(self) -> int:
        return self._rounds.rounds_completed if self._rounds is not None else 0

    def _finished(self) -> bool:
        return self._rounds is not None and self._rounds.finished

    def _open_for_agents(self) -> bool:
        return len(self._agents) >= self.config.rounds.min_agents

    def _state_name(self) -> str:
        rounds = self._rounds
        if self._latest is None or rounds is None:
            return "waiting_for_model"
        if rounds.finished:
            return "finished"
        if isinstance(rounds, AsyncLifecycle):
            return "collecting" if self._open_for_agents() else "waiting_for_agents"
        return "collecting" if rounds.open_task is not None else "waiting_for_agents"

    def _selected(self) -> list[str]:
        rounds = self._rounds
        if isinstance(rounds, AsyncLifecycle):
            return sorted(self._agents) if self._state_name() == "collecting" else []
        task = rounds.open_task if rounds is not None else None
        return list(task.selected) if task is not None else []

    def status(self) -> dict[str, Any]:
        """The run's state for ``GET /v1/status``."""
        with self._lock:
            self._ensure_loaded()
            finished = self._finished()
            return {
                "run_id": self.run_id,
                "round": self._rounds_completed() if finished else self._current_round(),
                "state": self._state_name(),
                "mode": self.mode,
                "agents": len(self._agents),
                "selected": self._selected(),
                "received": self._rounds.received_count() if self._rounds is not None else 0,
                "rounds_completed": self._rounds_completed(),
                "max_rounds": self.config.rounds.max_rounds,
            }


__all__ = [
    "AgentTask",
    "Aggregator",
    "Registration",
    "RequestRefusedError",
    "deployment_strategy",
    "load_initial_model",
    "refusal",
]
