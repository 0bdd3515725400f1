"""Continuing an interrupted simulation from the store.

A simulated round's records are written when the round ends (:class:`RoundBuffer`), so
a simulation killed at any moment leaves only whole rounds behind. Resuming reads the
last round that ended, starts the round engine at the next one from the newest stored
global model, the simulated clock where it stood, and (for a server optimiser) the state
stored with that model; sampling, fit seeds, speeds and dropouts are drawn per
(seed, round, client), so the rounds that follow are the ones an uninterrupted run
would have made: with the sequential executor the final weights are bitwise identical.

Not resumable: asynchronous runs (their clients in flight are not recorded), and client
state kept between rounds (SCAFFOLD's c_i, personal tensors) written by the clients of
the interrupted round is kept as it was left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedloom.algorithms.server_opt import ServerOptState
from fedloom.core.errors import ConfigError
from fedloom.core.store_protocols import RunReader
from fedloom.core.update import UpdateReport
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundOutcome
from fedloom.server.recording import StoreRecorder

#: run-config keys that must match for a run to be resumed by another call
MATCHING_KEYS = ("num_clients", "rounds", "strategy")


@dataclass
class _Accepted:
    """Updates accepted one after another, written together (one store transaction, not one each)."""

    inner: StoreRecorder
    updates: list[tuple[UpdateReport, Weights | None]]

    def __call__(self) -> None:
        self.inner.updates_accepted(self.updates)


class RoundBuffer:
    """A recorder that holds a simulated round's records and writes them when the round ends,
    in the order they happened (consecutive accepted updates in one write)."""

    def __init__(self, inner: StoreRecorder) -> None:
        self.inner = inner
        self._pending: list[Callable[[], None]] = []
        self._refusals: list[Callable[[], None]] = []  # the same refusals, kept apart for a failed run

    def round_opened(self, round: int, selected: Sequence[str]) -> None:
        self._pending.append(lambda: self.inner.round_opened(round, selected))

    def update_accepted(self, report: UpdateReport, weights: Weights | None) -> None:
        last = self._pending[-1] if self._pending else None
        if isinstance(last, _Accepted):
            last.updates.append((report, weights))
        else:
            self._pending.append(_Accepted(self.inner, [(report, weights)]))

    def update_rejected(self, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        def write() -> None:
            self.inner.update_rejected(round, client_id, code, reason)

        self._pending.append(write)
        self._refusals.append(write)

    def round_closed(self, outcome: RoundOutcome) -> None:
        self.flush()
        self.inner.round_closed(outcome)

    def round_abandoned(self, round: int, num_updates: int, num_samples: int) -> None:
        self.flush()
        self.inner.round_abandoned(round, num_updates, num_samples)

    def version_made(self, outcome: RoundOutcome) -> None:
        self.flush()
        self.inner.version_made(outcome)

    def flush(self) -> None:
        """Write what is held (also when a run ends: late refusals after the last round)."""
        pending, self._pending, self._refusals = self._pending, [], []
        for write in pending:
            write()

    def flush_refusals(self) -> None:
        """A run that failed or was interrupted mid-round: keep its refusals (why it failed), not
        the half round, so a resume re-runs that round whole."""
        refusals, self._pending, self._refusals = self._refusals, [], []
        for write in refusals:
            write()


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run continues: the first round to run and what starts it."""

    run_id: str
    rounds_done: int
    weights: Weights | None  # None: no round produced a model yet (start from the initial one)
    sim_seconds: float
    server_opt_state: ServerOptState | None
    client_state_dir: str | None


def resume_point(store: RunReader, run_id: str, run_config: Mapping[str, Any]) -> ResumePoint:
    """Read where ``run_id`` stopped, refusing a run another call could not continue exactly."""
    run = store.get_run(run_id)
    if run.kind != "simulation":
        raise ConfigError(f"run {run_id} is a {run.kind}; only simulations resume with --resume")
    if run.status == "finished":
        raise ConfigError(f"run {run_id} is finished: there is nothing to resume")
    stored = run.config or {}
    for key in MATCHING_KEYS:
        if stored.get(key) != run_config.get(key):
            raise ConfigError(
                f"run {run_id} was started with {key} = {stored.get(key)!r}, not {run_config.get(key)!r}:"
                " resume it with the settings it was started with"
            )
    if stored.get("mode", "sync") != "sync" or stored.get("asynchronous"):
        raise ConfigError(f"run {run_id} is asynchronous: its clients in flight were not recorded, start it anew")
    ended = [r.round for r in store.list_rounds(run_id) if r.status in ("closed", "abandoned")]
    done = max(ended, default=0)
    models = [m.round for m in store.list_global_models(run_id) if 0 < m.round <= done]
    weights = store.load_global_model(run_id, max(models)) if models else None
    clock = [value for number, value in store.metric_series(run_id, "sim_seconds") if number <= done]
    uses_server_opt = bool((stored.get("strategy") or {}).get("server_opt"))
    state = _server_opt_state(store, run_id, max(models)) if models and uses_server_opt else None
    return ResumePoint(run_id, done, weights, clock[-1] if clock else 0.0, state, stored.get("client_state_dir"))


def _server_opt_state(store: RunReader, run_id: str, round: int) -> ServerOptState | None:
    loaded = store.load_server_state(run_id, round)
    if loaded is None:
        raise ConfigError(f"run {run_id} has no server optimiser state stored with round {round}: start it anew")
    tensors, step = loaded
    return ServerOptState(step=step, tensors=dict(tensors))
