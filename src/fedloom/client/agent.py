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

This module is the state machine; registration and the credential are in
:mod:`fedloom.client.agent_identity`, stopping and signals in
:mod:`fedloom.client.agent_stop`, the Trainer call and its checks in
:mod:`fedloom.client.agent_fit`.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

from fedloom.client.agent_fit import WithSiteState, fit_checked
from fedloom.client.agent_identity import AgentIdentity, RunChanged
from fedloom.client.agent_state import AgentPhase, AgentState, AgentStateStore, PendingUpload
from fedloom.client.agent_stop import AgentInterrupted, StopControl
from fedloom.client.backoff import Backoff
from fedloom.client.compressed_upload import agent_update_body
from fedloom.client.lineage_check import LineageChecker, check_download, fetch_check
from fedloom.client.loading import check_trainer
from fedloom.client.round_meter import AgentRoundMeter
from fedloom.client.secagg_agent import SecAggParticipant
from fedloom.client.trainer import Trainer
from fedloom.client.transport import (
    AggregatorClient,
    NotFoundError,
    RequestInterruptedError,
    TaskInfo,
    UploadRejectedError,
    fit_config_from,
)
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitResult

__all__ = ["OBSOLETE_CODES", "Agent", "AgentInterrupted", "AgentOutcome", "default_agent_name"]

log = logging.getLogger("fedloom.agent")

#: upload refusals that mean "the aggregator already has it, or no longer wants it": move on
OBSOLETE_CODES = frozenset({"duplicate", "round_closed", "wrong_round", "not_selected"})
#: names the aggregator accepts (docs/protocol.md)
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
AgentOutcome = Literal["finished", "stopped"]
#: the trainer/fit helper under the name the tests (tests/client/test_fit_check.py) import
_fit = fit_checked


def default_agent_name() -> str:
    """This machine's host name, reduced to the characters the aggregator accepts."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-")
    return name or "agent"


class Agent(AgentIdentity):
    """Runs one site's Trainer against one aggregator until the run finishes or it is stopped.

    ``trainer_factory`` is called once, before anything is sent; ``state_dir`` holds the
    persisted state and models (one directory per agent). ``join_token`` may be None
    when ``state_dir`` already holds a credential. ``upload_initial`` (for an admin
    agent) uploads ``trainer.get_weights()`` as the initial global model when the server
    has none yet. ``poll_wait`` is the long-poll duration in seconds;
    ``min_poll_interval`` keeps a server that answers at once from being hammered;
    ``mismatch_backoff`` spaces out re-downloads of a model whose hash is not the task's;
    ``verify_lineage`` checks every downloaded model against the run's lineage chain.
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
        report_system: bool = True,
        verify_lineage: bool = True,
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
        self._stop = StopControl(self._interrupt_client)
        self._reregistered = False
        self._last_wait: tuple[int, str] | None = None
        self._mode = "sync"
        self._look_now = True
        self._meter = AgentRoundMeter(enabled=report_system)  # docs/protocol.md: system metrics
        self._lineage = LineageChecker(state_dir, lambda: self.client.agent_id) if verify_lineage else None
        self._secure = SecAggParticipant(client, self.store.directory, self._lineage)  # [secagg] rounds

    @property
    def state(self) -> AgentState:
        """The current (persisted) state."""
        return self._state

    # ---------------------------------------------------------------- stopping

    def stop(self) -> None:
        """Ask the agent to stop after the current step. Safe from other threads and signal handlers."""
        self._stop.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.requested

    def _interrupt_client(self) -> None:
        """Cut short the HTTP call of whichever client the agent holds when the stop comes."""
        self.client.interrupt()

    def _pause(self, seconds: float) -> None:
        """Sleep in short slices so that a stop request is noticed quickly."""
        self._stop.pause(seconds)

    # ---------------------------------------------------------------- main loop

    def run(self) -> AgentOutcome:
        """Work until the run is ``finished`` or the agent is stopped (``stopped``); state is saved either way."""
        with self.store.locked():
            self._state = self.store.load()
            with self._stop.signal_handlers(self.handle_signals):
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
        except RunChanged:  # the stored credential belonged to an older run: registered afresh
            self._learn_mode()
        if self.upload_initial:
            with suppress(RunChanged):
                self._offer_initial_model(trainer)
        if self._state.phase is AgentPhase.FINISHED:
            self._transition(AgentPhase.WAITING_GM, why="asking the aggregator again after a restart")
        while not self._stop.requested:
            try:
                if self._step(trainer):
                    return "finished"
            except RunChanged:
                continue
        raise AgentInterrupted("stop requested")

    def _step(self, trainer: Trainer) -> bool:
        """Do what the current phase says; True once the run is finished."""
        phase = self._state.phase
        if phase is AgentPhase.WAITING_GM:
            self._poll(trainer)
        elif phase in (AgentPhase.GM_READY, AgentPhase.TRAINING):
            self._train(trainer)
        elif phase is AgentPhase.SENDING:
            self._send()
        else:
            self._finish()
            return True
        return False

    # ---------------------------------------------------------------- phases

    def _poll(self, trainer: Trainer) -> None:
        """Ask for the task: at once after a step (the next round may already be open), else long-poll.

        A long poll answers when the task *changes* during the wait, so one started while a
        task is already actionable would idle for the whole wait; the immediate look avoids that.
        """
        quick, self._look_now = self._look_now, False
        started = time.monotonic()
        with self._stop.interruptible_step():
            task = self._call(self.client.task, wait=0 if quick else self.poll_wait)
        if task.state == "finished":
            self._transition(AgentPhase.FINISHED, why="the run is finished")
            return
        if task.state == "train" and not self._uploaded(task):
            self._prepare_round(task)
            return
        if task.state == "secagg":  # a secure round's stage (fedloom.client.secagg_agent)
            return self._secure.act(task, trainer, self._call)
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
        self._meter.selected()
        if not (held and self.store.global_path.exists()):
            started = time.monotonic()
            try:
                weights, sha = self._call(self.client.download_global, source)
            except NotFoundError as exc:
                log.warning("round %d: global model %s is not there yet (%s); asking again", task.round, source, exc)
                self._pause(max(self.min_poll_interval, 1.0))
                self._look_now = True
                return
            self._meter.downloaded(time.monotonic() - started, weights)
            check_download(self._lineage, lambda r: self._call(self.client.lineage, r), source, sha)
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
        with self._stop.interruptible_step():
            weights, num_samples, metrics = _fit(WithSiteState(trainer, self.store.directory), held[0], config)
        self._meter.trained(time.monotonic() - started)
        system = self._meter.report(weights)
        fitted, agent_id, folder = FitResult(weights, num_samples, metrics), self.client.agent_id, self.store.directory
        payload, sha = agent_update_body(agent_id, state.round, fitted, held[0], system, config.extra, folder)
        self.store.save_local(payload)
        took, shown = time.monotonic() - started, "".join(f", {k}={v:.4g}" for k, v in metrics.items())
        log.info("round %d: trained on %d samples in %.1f s%s", state.round, num_samples, took, shown)
        pending = PendingUpload(state.round, num_samples, sha, state.global_sha256, metrics)
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
        sent = time.monotonic()
        try:
            answer = self._call(self.client.upload_payload, payload)
        except UploadRejectedError as exc:
            if exc.code not in OBSOLETE_CODES:
                self.store.clear_local()
                self._transition(AgentPhase.WAITING_GM, why=f"round {pending.round}: upload refused", pending=None)
                raise
            what = "the update already landed or is obsolete; moving on"
            log.info("round %d: the aggregator answered %s (%s): %s", pending.round, exc.code, exc.detail, what)
        else:
            log.info("round %d: upload ok (%d samples)", pending.round, pending.num_samples)
            if self._lineage is not None and self._mode == "sync":
                self._lineage.contributed(pending.round, pending.sha256, pending.num_samples)
            self._meter.uploaded(time.monotonic() - sent)
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
        """Keep the final model for the site; lineage first, as the aggregator exits once all agents have it."""
        checker, lineage = self._lineage, lambda r: self._call(self.client.lineage, r)
        pending = None if checker is None else fetch_check(checker, lineage, "latest")
        try:
            weights, sha = self._call(self.client.download_global, "latest")
        except NotFoundError:
            return  # nothing to keep: the run made no global model
        if pending is not None:
            pending.verify(sha)
        if sha != self._state.global_sha256:
            self.store.save_global(weights, -1)
            self._save(self._state.with_(global_sha256=sha, global_round=None))
        log.info("the run is finished; the last global model is in %s", self.store.global_path)

    # ---------------------------------------------------------------- persistence

    def _transition(self, phase: AgentPhase, *, why: str = "", **changes: Any) -> None:
        before = self._state.phase
        self._save(self._state.with_(phase=phase, **changes))
        self._look_now = self._look_now or phase is AgentPhase.WAITING_GM
        log.info("state %s → %s%s", before, phase, f" ({why})" if why else "")
