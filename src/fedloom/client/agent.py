"""The agent: the runtime around a site's Trainer in a deployed federation.

An agent registers with the aggregator once (join token → credential), then loops:
long-poll the task; when selected, download the global model (if not already held),
train it with the site's :class:`~fedloom.client.trainer.Trainer`, upload the result,
and wait again, until the run is finished. Only model weights ever leave the site.

Every step is a persisted state (:mod:`fedloom.client.agent_state`)::

    waiting_gm → gm_ready → training → sending → waiting_gm …  → finished

so a restarted agent resumes: ``sending`` re-uploads the saved local model (a
``duplicate``/``round_closed``/``wrong_round``/``not_selected`` answer means it already
landed or is obsolete, and the agent moves on); ``gm_ready``/``training`` trains again;
a stored credential is reused, never re-registered (unless the server answers 401 to
it: then the agent registers once more with its join token, or fails clearly).

A local model trained while the aggregator moved on to a newer round or global model
is stale; in a synchronous run it is dropped instead of uploaded by default
(``discard_stale=False`` keeps it). In an asynchronous run (``mode = "async"`` in
``GET /v1/status``) it is always uploaded: the aggregator down-weights stale updates.

SIGTERM/SIGINT stop the agent cleanly (exit code 0): an HTTP call in flight (upload,
download, registration) is finished and the state saved; a long poll, a retry wait or
training in progress is abandoned (training is repeated after a restart). A second
signal stops at once; the saved state is still consistent.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

from fedloom.client.agent_state import AgentPhase, AgentState, AgentStateStore, PendingUpload
from fedloom.client.backoff import Backoff
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.client.fit_check import checked_fit_result
from fedloom.client.loading import check_trainer
from fedloom.client.trainer import Trainer
from fedloom.client.transport import (
    AggregatorClient,
    AuthError,
    NotFoundError,
    RequestInterruptedError,
    TaskInfo,
    UploadRejectedError,
    fit_config_from,
)
from fedloom.core.errors import ClientError, ConfigError, ValidationError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.serialization import content_hash
from fedloom.core.terms import NO_TERMS, ClientTerms
from fedloom.core.weights import Weights, check_finite, check_structure

__all__ = ["OBSOLETE_CODES", "Agent", "AgentInterrupted", "AgentOutcome", "default_agent_name"]

log = logging.getLogger("fedloom.agent")

#: upload refusals that mean "the aggregator already has it, or no longer wants it": move on
OBSOLETE_CODES = frozenset({"duplicate", "round_closed", "wrong_round", "not_selected"})
#: names the aggregator accepts (docs/protocol.md)
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
AgentOutcome = Literal["finished", "stopped"]
_T = TypeVar("_T")


class AgentInterrupted(BaseException):
    """Raised from the signal handler to abandon an interruptible step (long poll, training).

    A BaseException, like KeyboardInterrupt, so that a Trainer's ``except Exception``
    does not swallow it.
    """


class _RunChanged(Exception):  # noqa: N818 - internal control flow
    """Re-registration revealed a different run: drop the step in progress and start over."""


def default_agent_name() -> str:
    """This machine's host name, reduced to the characters the aggregator accepts."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-")
    return name or "agent"


class Agent:
    """Runs one site's Trainer against one aggregator until the run finishes or it is stopped.

    ``trainer_factory`` is called once, before anything is sent; ``state_dir`` holds the
    persisted state and models (one directory per agent). ``join_token`` may be None
    when ``state_dir`` already holds a credential. ``upload_initial`` (for an admin
    agent) uploads ``trainer.get_weights()`` as the initial global model when the server
    has none yet. ``poll_wait`` is the long-poll duration in seconds;
    ``min_poll_interval`` keeps a server that answers at once from being hammered;
    ``mismatch_backoff`` spaces out re-downloads of a model whose hash is not the task's.
    """

    def __init__(
        self,
        client: AggregatorClient,
        trainer_factory: Callable[[], Trainer],
        state_dir: str | Path,
        name: str,
        join_token: str | None = None,
        *,
        discard_stale: bool = True,
        upload_initial: bool = False,
        poll_wait: float = 30.0,
        min_poll_interval: float = 1.0,
        handle_signals: bool = True,
        mismatch_backoff: Backoff | None = None,
    ) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"agent name {name!r} must be 1-64 characters from A-Z a-z 0-9 . _ - (set --name)")
        self.client = client
        self.trainer_factory = trainer_factory
        self.store = AgentStateStore(state_dir)
        self.name = name
        self.join_token = join_token
        self.discard_stale = discard_stale
        self.upload_initial = upload_initial
        self.poll_wait = poll_wait
        self.min_poll_interval = min_poll_interval
        self.handle_signals = handle_signals
        self.mismatch_backoff = mismatch_backoff or Backoff()
        self._state = AgentState()
        self._stop_requested = False
        self._interruptible = False
        self._reregistered = False
        self._last_wait: tuple[int, str] | None = None
        self._mode = "sync"
        self._look_now = True

    @property
    def state(self) -> AgentState:
        """The current (persisted) state."""
        return self._state

    # ---------------------------------------------------------------- stopping

    def stop(self) -> None:
        """Ask the agent to stop after the current step. Safe from other threads and signal handlers."""
        self._stop_requested = True  # plain flags only: no locks, so a signal handler cannot deadlock
        self.client.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = self._stop_requested or self._interruptible
        log.info("received %s: stopping %s", signal.Signals(signum).name, "now" if now else "after this step")
        self.stop()
        if now:
            raise AgentInterrupted(signal.Signals(signum).name)

    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def _interruptible_step(self) -> Iterator[None]:
        """A step a stop signal may abandon at once (nothing in it needs finishing)."""
        if self._stop_requested:
            raise AgentInterrupted("stop requested")
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _pause(self, seconds: float) -> None:
        """Sleep in short slices so that a stop request is noticed quickly."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, left))

    # ---------------------------------------------------------------- main loop

    def run(self) -> AgentOutcome:
        """Work until the run is ``finished`` or the agent is stopped (``stopped``); state is saved either way."""
        with self.store.locked():
            self._state = self.store.load()
            with self._signal_handlers():
                try:
                    return self._run()
                except (AgentInterrupted, RequestInterruptedError):
                    pass
            self.store.save(self._state)
            log.info("stopped in state %s; a restart resumes from there", self._state.phase)
            return "stopped"

    def _run(self) -> AgentOutcome:
        trainer = check_trainer(self.trainer_factory(), "the trainer factory")
        self._connect()
        try:
            self._learn_mode()
        except _RunChanged:  # the stored credential belonged to an older run: registered afresh
            self._learn_mode()
        if self.upload_initial:
            with suppress(_RunChanged):
                self._offer_initial_model(trainer)
        if self._state.phase is AgentPhase.FINISHED:
            self._transition(AgentPhase.WAITING_GM, why="asking the aggregator again after a restart")
        while not self._stop_requested:
            try:
                if self._step(trainer):
                    return "finished"
            except _RunChanged:
                continue
        raise AgentInterrupted("stop requested")

    def _step(self, trainer: Trainer) -> bool:
        """Do what the current phase says; True once the run is finished."""
        phase = self._state.phase
        if phase is AgentPhase.WAITING_GM:
            self._poll()
        elif phase in (AgentPhase.GM_READY, AgentPhase.TRAINING):
            self._train(trainer)
        elif phase is AgentPhase.SENDING:
            self._send()
        else:
            self._finish()
            return True
        return False

    # ---------------------------------------------------------------- identity

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
        """Exchange the join token for a credential and save it at once; raise _RunChanged if the run is new."""
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
            raise _RunChanged
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
        weights = _checked_weights(trainer.get_weights(), "trainer.get_weights()")
        try:
            self._call(self.client.upload_initial, weights)
        except UploadRejectedError as exc:
            if exc.status != 409:
                raise
            log.info("another agent uploaded the initial model first (%s)", exc.detail)
            return
        log.info("uploaded the initial global model (%s)", content_hash(weights)[:12])

    # ---------------------------------------------------------------- phases

    def _poll(self) -> None:
        """Ask for the task: at once after a step (the next round may already be open), else long-poll.

        A long poll answers when the task *changes* during the wait, so one started while a
        task is already actionable would idle for the whole wait; the immediate look avoids that.
        """
        quick, self._look_now = self._look_now, False
        started = time.monotonic()
        with self._interruptible_step():
            task = self._call(self.client.task, wait=0 if quick else self.poll_wait)
        if task.state == "finished":
            self._transition(AgentPhase.FINISHED, why="the run is finished")
            return
        if task.state == "train" and not self._uploaded(task):
            self._prepare_round(task)
            return
        self._note_wait(task)
        if not quick:  # a server that answers long polls at once is not hammered
            self._pause(self.min_poll_interval - (time.monotonic() - started))

    def _uploaded(self, task: TaskInfo) -> bool:
        """True if this agent's update for exactly this task already went up (the server may lag)."""
        state = self._state
        return state.uploaded_round == task.round and state.uploaded_global_sha256 == task.global_sha256

    def _note_wait(self, task: TaskInfo) -> None:
        key = (task.round, task.state)
        if key != self._last_wait:
            log.info("waiting: the aggregator is at round %d (%s)", task.round, task.state)
            self._last_wait = key

    def _prepare_round(self, task: TaskInfo) -> None:
        """Hold the round's global model (downloading it if the hash differs), then go to gm_ready."""
        state = self._state
        source = task.global_round if task.global_round is not None else task.round
        held = task.global_sha256 is not None and task.global_sha256 == state.global_sha256
        if not (held and self.store.global_path.exists()):
            try:
                weights, sha = self._call(self.client.download_global, source)
            except NotFoundError as exc:
                log.warning("round %d: global model %s is not there yet (%s); asking again", task.round, source, exc)
                self._pause(max(self.min_poll_interval, 1.0))
                self._look_now = True
                return
            self.store.save_global(weights, source)
            self._save(self._state.with_(global_sha256=sha, global_round=source))
            log.info("round %d: downloaded global model %s (%s)", task.round, source, sha[:12])
            if task.global_sha256 is not None and sha != task.global_sha256:
                self._back_off_mismatch(task, sha)
                return
            self.mismatch_backoff.reset()
        self._transition(
            AgentPhase.GM_READY,
            why=f"selected for round {task.round}",
            round=task.round,
            global_round=source,
            config=dict(task.config),
            pending=None,
        )

    def _back_off_mismatch(self, task: TaskInfo, served: str) -> None:
        """The served model is not the one the task names: it may have changed during the
        download, or the aggregator is broken. Ask again, after a growing wait."""
        delay = self.mismatch_backoff.next_delay()
        log.warning(
            "round %d: the served global model %s differs from the task's %s (attempt %d); "
            "backing off %.2f s before asking again",
            task.round,
            served[:12],
            (task.global_sha256 or "")[:12],
            self.mismatch_backoff.attempts,
            delay,
        )
        self._pause(delay)
        self._look_now = True

    def _train(self, trainer: Trainer) -> None:
        state = self._state
        if state.round is None or state.config is None:
            self._transition(AgentPhase.WAITING_GM, why="no round to train for")
            return
        held = self.store.load_global()
        if held is None or held[1] != state.global_sha256:
            why = "the held global model is missing or damaged"
            self._transition(AgentPhase.WAITING_GM, why=why, global_sha256=None)
            return
        if state.phase is AgentPhase.TRAINING:
            log.info("round %d: training was interrupted before; training again", state.round)
        self._transition(AgentPhase.TRAINING, why=f"round {state.round}")
        config = fit_config_from(state.config, state.round)
        started = time.monotonic()
        with self._interruptible_step():
            weights, num_samples, metrics = _fit(_WithState(trainer, self.store.directory), held[0], config)
        payload = self.client.update_payload(state.round, weights, num_samples, metrics)
        self.store.save_local(payload)
        log.info(
            "round %d: trained on %d samples in %.1f s%s",
            state.round,
            num_samples,
            time.monotonic() - started,
            "".join(f", {k}={v:.4g}" for k, v in metrics.items()),
        )
        pending = PendingUpload(state.round, num_samples, content_hash(weights), state.global_sha256, metrics)
        self._transition(AgentPhase.SENDING, why=f"round {state.round}", pending=pending)

    def _send(self) -> None:
        state = self._state
        pending = state.pending
        payload = self.store.load_local()
        if pending is None or payload is None:
            why = "the saved local model is missing or damaged (it will be retrained)"
            self._transition(AgentPhase.WAITING_GM, why=why, pending=None)
            return
        if self.discard_stale and self._mode != "async" and self._is_stale(pending):
            self.store.clear_local()
            self._transition(AgentPhase.WAITING_GM, why=f"round {pending.round}: stale result dropped", pending=None)
            return
        try:
            answer = self._call(self.client.upload_payload, payload)
        except UploadRejectedError as exc:
            if exc.code not in OBSOLETE_CODES:
                self.store.clear_local()
                self._transition(AgentPhase.WAITING_GM, why=f"round {pending.round}: upload refused", pending=None)
                raise
            log.info(
                "round %d: the aggregator answered %s (%s): the update already landed or is obsolete; moving on",
                pending.round,
                exc.code,
                exc.detail,
            )
        else:
            log.info("round %d: upload ok (%d samples)", pending.round, pending.num_samples)
            log.debug("upload answer: %s", answer)
        self.store.clear_local()
        self._transition(
            AgentPhase.WAITING_GM,
            why=f"round {pending.round} done",
            pending=None,
            uploaded_round=pending.round,
            uploaded_global_sha256=pending.global_sha256,
        )

    def _is_stale(self, pending: PendingUpload) -> bool:
        """Ask the task once (no long poll): has the aggregator moved past the model we trained from?"""
        task = self._call(self.client.task, wait=0)
        moved = task.state == "finished" or task.round != pending.round
        newer_model = task.global_sha256 is not None and task.global_sha256 != pending.global_sha256
        if moved or newer_model:
            log.info(
                "round %d: dropping the stale local model: the aggregator is now at round %d (%s)%s "
                "(keep such results with --keep-stale)",
                pending.round,
                task.round,
                task.state,
                " with a newer global model" if newer_model else "",
            )
            return True
        return False

    def _finish(self) -> None:
        """Keep the final global model on disk for the site, then stop."""
        try:
            weights, sha = self._call(self.client.download_global, "latest")
        except NotFoundError:
            sha = None
        else:
            if sha != self._state.global_sha256:
                self.store.save_global(weights, -1)
                self._save(self._state.with_(global_sha256=sha, global_round=None))
        log.info("the run is finished; the last global model is in %s", self.store.global_path)

    # ---------------------------------------------------------------- persistence

    def _save(self, state: AgentState) -> None:
        self.store.save(state)
        self._state = state

    def _transition(self, phase: AgentPhase, *, why: str = "", **changes: Any) -> None:
        before = self._state.phase
        self._save(self._state.with_(phase=phase, **changes))
        self._look_now = self._look_now or phase is AgentPhase.WAITING_GM
        log.info("state %s → %s%s", before, phase, f" ({why})" if why else "")


class _WithState:
    """The user's Trainer, trained with the state this site keeps between rounds
    (personal tensors, the client parts' state) in the agent's directory."""

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.trainer, self.directory = trainer, directory

    def get_weights(self) -> Weights:
        return self.trainer.get_weights()

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """The round's fit through the one client-side function the simulation uses too (``terms``
        come from the client parts the config names, not from the caller)."""
        return fit_with_state(self.trainer, weights, config, LocalContext("agent", self.directory))

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        return dict(self.trainer.evaluate(weights, config))


def _fit(trainer: Trainer, weights: Weights, config: Any) -> tuple[Weights, int, dict[str, float]]:
    """Run ``trainer.fit`` and check what it returned; any problem becomes a ClientError naming the round."""
    try:
        result = trainer.fit(weights, config)
    except ClientError:
        raise
    except Exception as exc:
        raise ClientError(f"round {config.round}: trainer.fit raised {type(exc).__name__}: {exc}") from exc
    checked = checked_fit_result(result, config.round)  # the same check as the simulation's
    return checked.weights, checked.num_samples, dict(checked.metrics)


def _checked_weights(weights: Any, what: str) -> Weights:
    try:
        check_structure(weights)
        check_finite(weights)
    except ValidationError as exc:
        raise ClientError(f"{what} returned unusable weights: {exc}") from None
    return dict(weights)
