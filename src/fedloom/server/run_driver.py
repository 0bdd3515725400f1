"""Keeps an aggregator's in-memory state in step with the store and the clock.

**The database is the commit point.** A global model is written only after its
aggregation succeeded, a local model before it counts, and :meth:`RunDriver.load`
rebuilds every piece of state from what the store holds: the newest global model, the
open round (its recorded selection, its recorded local models re-submitted without
being recorded again), the agents, their declared sizes and revocations. So a process
killed at any moment resumes at the last completed round with exactly one global model
per round; and if a store write fails half-way through a state change
(:meth:`RunDriver.recording`), the same reload runs, so memory never stays ahead of the
database. :meth:`RunDriver.advance` ticks the shared round lifecycle with the wall clock
and applies what it reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from fedloom.algorithms.strategy import Strategy
from fedloom.core.errors import StoreError
from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.core.serialization import content_hash
from fedloom.core.store_protocols import DeploymentStore
from fedloom.core.weights import Weights, validate_weights
from fedloom.server.config import AggregatorConfig
from fedloom.server.engine import RoundOutcome
from fedloom.server.resume import RunContext, load_async, load_sync
from fedloom.server.round_watchers import RoundWatchers
from fedloom.server.rounds import (
    DeadlineExtended,
    Event,
    RoundAbandoned,
    RoundClosed,
    RoundOpened,
    RunFinished,
    StageAdvanced,
)
from fedloom.server.run_state import RunState
from fedloom.server.served_model import ServedModel, read_only

log = logging.getLogger("fedloom.aggregator")


class RunDriver:
    """The run's state, its reload from the store, and its lifecycle ticks (see the module docstring).

    Not thread-safe on its own: the aggregator calls it under its lock. ``changed`` is
    called after every change agents could notice (it wakes long-polls)."""

    def __init__(self, run: RunContext, strategy: Strategy, clock: Callable[[], float], changed: Callable[[], None]):
        self.run, self.strategy, self.clock, self.changed = run, strategy, clock, changed
        self.state = RunState(run.config.rounds.min_agents)
        self.finished_at: float | None = None  # set when this process finished the run
        self.fetched_final: set[str] = set()  # agents that downloaded the final model
        self._stale = False
        self.watchers = RoundWatchers(())  # told after each round is recorded (the aggregator sets it)

    @property
    def config(self) -> AggregatorConfig:
        return self.run.config

    @property
    def store(self) -> DeploymentStore:
        return self.run.store

    # -- loading -------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild every piece of in-memory state from the store."""
        self._stale = True
        run_id = self.run.run_id
        state = self.state = RunState(self.config.rounds.min_agents)
        state.agents = {a.id: a for a in self.store.list_agents(run_id)}
        state.declared = {c.client_id: c.num_samples for c in self.store.list_clients(run_id)}
        models = self.store.list_global_models(run_id)
        if models:
            newest = models[-1]
            weights = read_only(self.store.load_global_model(run_id, newest.round))
            state.set_latest(ServedModel(weights, newest.sha256, newest.round, newest.num_samples))
            if self.config.run.mode == "sync":
                state.rounds = load_sync(self.run, newest, weights, list(state.agents))
            else:
                state.rounds = load_async(self.run, newest, weights)
        self.drop_revoked()  # after the open round resumed with its recorded selection
        self._stale = False

    def ensure_loaded(self) -> None:
        """Reload after a failed store write left memory possibly ahead of the database."""
        if self._stale:
            self.load()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Around a state change that writes to the store: if a write fails, reload from the store."""
        try:
            yield
        except StoreError:
            log.exception("a store write failed; reloading the state from the store")
            self._stale = True
            try:
                self.load()
            except StoreError:
                log.exception("reloading failed; the next request tries again")
            raise

    def drop_revoked(self) -> frozenset[str]:
        """Agents whose join token was revoked (maybe by ``fedloom token revoke`` in another
        process: one indexed query), taken out of the run: no longer counted towards
        ``min_agents``, never selected again, and an open round stops waiting for them."""
        revoked = frozenset(self.store.revoked_agent_ids(self.run.run_id))
        for agent_id in self.state.drop_revoked(revoked):
            log.info("agent %s: its join token was revoked; it is out of the run", agent_id)
            self.changed()
        return revoked

    # -- the global model ------------------------------------------------------------
    def set_initial(self, weights: Weights) -> str:
        """Record the initial model as global model 0 (the commit point), then start rounds;
        returns its hash. State a strategy keeps inside the model (SCAFFOLD's control
        variate, FedCurv's Fisher sums) joins it here, so it is stored, sent and restored
        with every global model."""
        validate_weights(weights)
        weights = self.strategy.initial_weights(weights)
        stored = {k: np.array(v, copy=True) for k, v in weights.items()}
        self.store.save_global_model(self.run.run_id, 0, stored, 0)
        served = ServedModel(read_only(stored), content_hash(stored), 0, 0)
        self.state.set_latest(served)
        if self.config.run.mode == "sync":
            self.state.rounds = self.run.sync_rounds(stored, 1, list(self.state.agents))
        else:
            self.state.rounds = self.run.async_rounds(stored, 0)
        log.info("initial model recorded (%s)", served.sha256[:12])
        self.changed()
        return served.sha256

    # -- time ------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Tick the lifecycle at ``now`` and apply what happened (a new global model, the finish)."""
        self.drop_revoked()  # a round must never open with an agent revoked since the last tick
        rounds = self.state.rounds
        if rounds is None:
            return
        with self.recording():
            events = rounds.tick(now, may_open=self.state.open_for_agents())
        for event in events:
            self._apply(event)
        if events:
            self.changed()

    def advance_quietly(self) -> None:
        """Advance after a request's own change succeeded: a failure here must not fail that request."""
        try:
            self.advance(self.clock())
        except StoreError:
            log.exception("advancing the run failed; the next tick tries again")

    def _apply(self, event: Event) -> None:
        if isinstance(event, RoundClosed):
            outcome = event.outcome
            weights = read_only(outcome.weights)
            self.state.set_latest(ServedModel(weights, content_hash(weights), outcome.round, outcome.num_samples))
            missing = f", missing {', '.join(outcome.missing)}" if outcome.missing else ""
            log.info("round %d: aggregated %d update(s)%s", outcome.round, outcome.num_updates, missing)
            self.watchers.round_recorded(_summary(outcome))
        elif isinstance(event, RoundOpened):
            log.info("round %d: opened, selected %s", event.round, ", ".join(event.selected))
        elif isinstance(event, RoundAbandoned):
            log.info("round %d: abandoned at its deadline with %d update(s)", event.round, event.num_updates)
            self.watchers.round_recorded(RoundSummary(event.round, 0, event.num_updates, 0, {}, 0.0))
        elif isinstance(event, DeadlineExtended):
            log.info("round %d: deadline passed with %d update(s); extended", event.round, event.received)
        elif isinstance(event, StageAdvanced):
            gone = f"; dropped {', '.join(event.dropped)}" if event.dropped else ""
            log.info("round %d: secure aggregation at stage %s%s", event.round, event.stage, gone)
        elif isinstance(event, RunFinished) and self.finished_at is None:
            completed = self.state.rounds_completed()
            self.store.finish_run(self.run.run_id, "finished", {"rounds_completed": completed})
            self.finished_at = self.clock()
            log.info("run finished after %d round(s)", completed)
            self.watchers.finished(self.run_info(), RunEnd("finished", completed))

    def run_info(self) -> RunInfo:
        """The run as its watchers see it (its config as stored: secrets masked)."""
        config = self.config
        name = config.federation.run_name(config.run.name)
        return RunInfo(self.run.run_id, name, "deployment", config.rounds.max_rounds, config.run.seed)

    def may_stop(self, now: float) -> bool:
        """Whether a finished run's server may exit: every agent has downloaded the final model, or
        ``[server] linger_seconds`` passed since the finish (for agents that never ask again)."""
        if self.finished_at is None:
            return False
        everyone = set(self.state.agents) <= self.fetched_final
        return everyone or now - self.finished_at >= self.config.server.linger_seconds


def _summary(outcome: RoundOutcome) -> RoundSummary:
    """What a watcher is told of a closed round (it reads the rest from the store)."""
    return RoundSummary(
        outcome.round, 0, outcome.num_updates, outcome.num_samples, dict(outcome.client_metrics), outcome.seconds
    )
