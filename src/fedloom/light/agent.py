"""The light agent: docs/protocol.md's agent loop for devices with only NumPy and the standard library.

It registers once (join token → credential, saved at once), then long-polls its task;
when selected it holds the round's global model (downloaded unless its hash is the one
held), trains it with the device's :class:`~fedloom.light.trainer.LightTrainer`, saves
the upload's exact bytes and the round in its state directory *before* sending, and
sends. A restart with an unconfirmed upload re-sends those bytes: ``duplicate``,
``round_closed``, ``wrong_round`` or ``not_selected`` mean the aggregator already has it
or no longer wants it, so the device moves on and never counts twice. A round whose
update the aggregator confirmed is never trained again, even if a lagging task offers
it. A ``401`` to the stored credential registers again once with the join token.
Secure-aggregation rounds need the full ``fedloom agent`` and are refused by name.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fedloom.light.client import LightClient, ServerRefusal
from fedloom.light.state import LightState, StateDir
from fedloom.light.trainer import LightFitConfig, LightTrainer, checked_result
from fedloom.light.wire import WireError, decode, encode

__all__ = ["OBSOLETE_CODES", "LightAgent", "LightAgentError"]

log = logging.getLogger("fedloom.light")

#: upload refusals that mean "already there, or no longer wanted": move on
OBSOLETE_CODES = frozenset({"duplicate", "round_closed", "wrong_round", "not_selected"})


class LightAgentError(Exception):
    """Something the light agent cannot carry on from; the message says what and how to fix it."""


class LightAgent:
    """Runs one device's trainer against one aggregator until the run is finished (or :meth:`stop`)."""

    def __init__(
        self,
        client: LightClient,
        trainer: LightTrainer,
        state_dir: str,
        name: str,
        join_token: str | None = None,
        *,
        poll_wait: float = 30.0,
        min_poll_interval: float = 1.0,
    ) -> None:
        self.client, self.trainer, self.name, self.join_token = client, trainer, name, join_token
        self.files = StateDir(state_dir)
        self.poll_wait, self.min_poll_interval = poll_wait, min_poll_interval
        self.state = LightState()
        self._stopping = False
        self._reregistered = False

    def stop(self) -> None:
        """Stop after the current step (safe from another thread or a signal handler)."""
        self._stopping = self.client.stopped = True

    def run(self) -> str:
        """``finished`` when the run is over (the final model is in the state directory), else ``stopped``."""
        self.state = self.files.load()
        self._connect()
        quick = True
        while not self._stopping:
            if self.state.pending_round is not None:
                self._send()
                quick = True
                continue
            task = self._call(self.client.task, 0 if quick else self.poll_wait)
            started, quick = time.monotonic(), False
            state = task.get("state")
            if state == "finished":
                self._keep_final()
                return "finished"
            if state == "secagg":
                raise LightAgentError(
                    "the run uses secure aggregation, which the light agent does not speak: run "
                    "`fedloom agent` on this site, or turn [secagg] off"
                )
            if state == "train" and not self._uploaded(task):
                quick = self._train(task)
                continue
            time.sleep(max(0.0, self.min_poll_interval - (time.monotonic() - started)))
        return "stopped"

    # ---------------------------------------------------------------- identity

    def _connect(self) -> None:
        if self.state.credential and self.state.agent_id:
            self.client.credential = self.state.credential
            log.info("light agent %s (id %s) resuming", self.name, self.state.agent_id)
            return
        self._register()

    def _register(self) -> None:
        if not self.join_token:
            raise LightAgentError(
                f"no credential in {str(self.files.directory)!r} and no join token: set "
                "FEDLOOM_AGENT_TOKEN or pass --token-file (the token of `fedloom token create`)"
            )
        reg = self.client.register(self.name, self.join_token)
        if self.state.run_id is not None and reg.get("run_id") != self.state.run_id:
            log.warning("the aggregator runs a new run %s: forgetting the old one's rounds", reg.get("run_id"))
            self.state = LightState()
            self.files.remove(self.files.pending_path)
        fields = {k: reg.get(k) for k in ("agent_id", "credential", "run_id")}
        self._save(self.state.with_(name=self.name, **fields))
        log.info("registered as %s (agent id %s)", self.name, reg["agent_id"])

    def _call(self, method: Any, *args: Any) -> Any:
        """Call the server; a 401 to the stored credential registers again once, then retries."""
        try:
            return method(*args)
        except ServerRefusal as exc:
            if exc.status != 401 or self._reregistered or not self.join_token:
                raise
            log.warning("the aggregator refused the stored credential (%s); registering again", exc.detail)
            self._reregistered = True
            self._register()
            return method(*args)

    # ---------------------------------------------------------------- rounds

    def _uploaded(self, task: dict[str, Any]) -> bool:
        """True if this device's update for exactly this task is already at the aggregator."""
        state = self.state
        return state.uploaded_round == task.get("round") and state.uploaded_global_sha256 == task.get("global_sha256")

    def _train(self, task: dict[str, Any]) -> bool:
        """Train the task's round and save the upload; False (poll after a pause) if the model was not there."""
        round_no, source, expected = _task_fields(task)
        held = self._held_global(expected)
        if held is None:
            try:
                payload = self._call(self.client.download, source)
            except ServerRefusal as exc:
                if exc.status != 404:
                    raise
                log.warning("round %d: global model %s is not there yet; asking again", round_no, source)
                time.sleep(self.min_poll_interval)
                return True
            if payload.sha256 != expected:
                log.warning("round %d: the served model is not the task's (it moved on); asking again", round_no)
                time.sleep(self.min_poll_interval)
                return True
            self.files.write(self.files.global_path, encode(payload.weights, {"round": str(source)}))
            self._save(self.state.with_(global_sha256=payload.sha256))
            held = payload.weights
        config = LightFitConfig.from_task(task.get("config") or {}, round_no)
        started = time.monotonic()
        weights, num_samples, metrics = checked_result(self.trainer.fit(dict(held), config), held, round_no)
        header = {
            "round": str(round_no),
            "client_id": str(self.state.agent_id),
            "num_samples": str(num_samples),
            "metrics": json.dumps(metrics, allow_nan=False),
        }
        self.files.write(self.files.pending_path, encode(weights, header))
        self._save(self.state.with_(pending_round=round_no, pending_global_sha256=expected))
        log.info("round %d: trained on %d samples in %.2f s", round_no, num_samples, time.monotonic() - started)
        return True

    def _held_global(self, sha256: str) -> dict[str, Any] | None:
        """The held global model if it is the one with ``sha256`` (and undamaged), else None."""
        data = self.files.read(self.files.global_path)
        if data is None or self.state.global_sha256 != sha256:
            return None
        try:
            payload = decode(data)
        except WireError:
            return None
        return payload.weights if payload.sha256 == sha256 else None

    def _send(self) -> None:
        """Send the saved upload; the aggregator's answer (or an obsolete refusal) confirms the round."""
        state, payload = self.state, self.files.read(self.files.pending_path)
        assert state.pending_round is not None
        if payload is not None:
            try:
                self._call(self.client.upload, payload)
                log.info("round %d: upload accepted", state.pending_round)
            except ServerRefusal as exc:
                if exc.code not in OBSOLETE_CODES:
                    self.files.remove(self.files.pending_path)
                    self._save(state.with_(pending_round=None, pending_global_sha256=None))
                    raise LightAgentError(
                        f"round {state.pending_round}: the aggregator refused the update: {exc.code} ({exc.detail})"
                    ) from None
                log.info(
                    "round %d: the aggregator answered %s: already there or obsolete", state.pending_round, exc.code
                )
        self._save(
            state.with_(
                uploaded_round=state.pending_round,
                uploaded_global_sha256=state.pending_global_sha256,
                pending_round=None,
                pending_global_sha256=None,
            )
        )
        self.files.remove(self.files.pending_path)

    def _keep_final(self) -> None:
        """Download the run's last global model into the state directory (the device keeps it)."""
        try:
            payload = self._call(self.client.download, "latest")
        except ServerRefusal as exc:
            if exc.status == 404:
                return
            raise
        self.files.write(self.files.global_path, encode(payload.weights, {"round": "-1"}))
        self._save(self.state.with_(global_sha256=payload.sha256))
        log.info("the run is finished; the last global model is in %s", self.files.global_path)

    def _save(self, state: LightState) -> None:
        self.files.save(state)
        self.state = state


def _task_fields(task: dict[str, Any]) -> tuple[int, int, str]:
    """A train task's round, the global model it starts from and that model's hash, checked."""
    round_no, source, sha = task.get("round"), task.get("global_round"), task.get("global_sha256")
    source = round_no if source is None else source
    if not isinstance(round_no, int) or not isinstance(source, int) or not isinstance(sha, str):
        raise LightAgentError(
            f"the aggregator sent a train task without round/global_round/global_sha256: {task!r:.300}"
        )
    return round_no, source, sha
