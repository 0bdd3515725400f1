"""Rebuilding an aggregator's lifecycle from the store: the database is the commit point.

At start, and after a store write failed half-way through a state change, the
aggregator throws its memory away and calls :func:`load_lifecycle`: the newest global
model, the open round with its recorded selection and its already-stored uploads
(re-submitted without being recorded again), or, in async mode, the arrivals since the
newest version. A round whose global model was saved just before a crash is finished
here (:func:`repair_round`), so a restart ends with exactly one global model per round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fedloom.algorithms.server_opt import ServerOptState
from fedloom.algorithms.strategy import Strategy
from fedloom.core.metrics import usable_metrics
from fedloom.core.records import ModelRecord
from fedloom.core.store_protocols import DeploymentStore
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.config import AggregatorConfig
from fedloom.server.engine import RoundEngine
from fedloom.server.recording import StoreRecorder
from fedloom.server.round_types import RoundSynthesis
from fedloom.server.rounds import AsyncLifecycle, AsyncSettings, ClosePolicy, SyncRounds

log = logging.getLogger("fedloom.aggregator")


def epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def close_policy(config: AggregatorConfig) -> ClosePolicy:
    """``[rounds]``'s threshold, minimum and deadline as the lifecycle's close policy."""
    rounds = config.rounds
    return ClosePolicy(rounds.threshold, rounds.min_updates, rounds.deadline_seconds, rounds.deadline_policy)  # type: ignore[arg-type]


#: builds a run's synchronous lifecycle from its engine and close policy (an edge aggregator's relay)
LifecycleFactory = Callable[[RoundEngine, ClosePolicy], SyncRounds]


@dataclass(frozen=True)
class RunContext:
    """What every lifecycle of one run is built from (``lifecycle``: a SyncRounds other than the plain one;
    ``synthesis``: one cluster of a federation)."""

    config: AggregatorConfig
    store: DeploymentStore
    run_id: str
    strategy: Strategy
    recorder: StoreRecorder
    lifecycle: LifecycleFactory | None = None
    synthesis: RoundSynthesis | None = None

    def sync_rounds(self, weights: Weights, start_round: int, agents: Sequence[str]) -> SyncRounds:
        engine = RoundEngine(
            self.strategy,
            weights,
            seed=self.config.run.seed,
            max_rounds=self.config.rounds.max_rounds,
            start_round=start_round,
            recorder=self.recorder,
            server_opt_state=stored_opt_state(self, len(agents)),
            synthesis=self.synthesis,
        )
        engine.register_clients((agent_id, None) for agent_id in sorted(agents))
        if self.lifecycle is not None:
            return self.lifecycle(engine, close_policy(self.config))
        if self.config.secagg.enabled:  # [secagg]: the rounds run the SecAgg+ stages
            from fedloom.server.secagg_rounds import SecAggRounds

            return SecAggRounds(engine, close_policy(self.config), self.config.secagg.settings())
        return SyncRounds(engine, close_policy(self.config))

    def async_rounds(self, weights: Weights, version: int, uploaded: Sequence[tuple[str, int]] = ()) -> AsyncLifecycle:
        table = self.config.asynchronous
        settings = AsyncSettings(table.buffer_size, table.staleness_exponent, table.mixing)
        rounds = settings.start(weights, version, self.config.rounds.max_rounds, uploaded)
        return AsyncLifecycle(rounds, self.strategy.client, self.config.run.seed, self.recorder)


def stored_opt_state(run: RunContext, num_clients: int) -> ServerOptState | None:
    """The server optimiser's state stored with the newest global model (schema version 4 on).

    A run recorded before version 4 has no stored states: its state is rebuilt by
    :func:`replayed_opt_state`, the fallback, which needs every local model's blob.
    """
    if run.strategy.server_opt is None:
        return None
    rounds = [m.round for m in run.store.list_global_models(run.run_id)]
    stored = run.store.load_server_state(run.run_id, max(rounds)) if rounds else None
    if stored is None:
        if rounds and max(rounds) > min(rounds):
            log.info("round %d: no stored server-optimiser state, replaying the stored rounds", max(rounds))
        return replayed_opt_state(run, num_clients)
    tensors, step = stored
    return ServerOptState(step, tensors)


def replayed_opt_state(run: RunContext, num_clients: int) -> ServerOptState | None:
    """The server optimiser's state, rebuilt by replaying every stored round (runs before schema v4).

    Each closed round left its accepted local models and its global model, so
    aggregating them again in arrival order and stepping the optimiser reproduces its
    state exactly.
    """
    opt = run.strategy.server_opt
    models = {m.round: m for m in run.store.list_global_models(run.run_id)}
    if opt is None or not models:
        return None
    previous = run.store.load_global_model(run.run_id, min(models))
    state = opt.init(previous)
    for number in sorted(models)[1:]:
        accumulator = run.strategy.start_accumulator(previous, num_clients=num_clients)
        for update in _stored_updates(run, run.store.list_local_models(run.run_id, number)):
            accumulator.add(update)
        if accumulator.count == 0:
            continue
        _, state = opt.step(previous, accumulator.result(), state)
        previous = run.store.load_global_model(run.run_id, number)
    return state


def _stored_updates(run: RunContext, models: Sequence[ModelRecord]) -> list[ClientUpdate]:
    updates = []
    for model in models:
        assert model.client_id is not None
        weights = run.store.load_local_model(run.run_id, model.round, model.client_id)
        metrics = usable_metrics(model.metrics)  # rows older than metric validation
        updates.append(ClientUpdate(model.client_id, model.round, weights, model.num_samples, metrics))
    return updates


def _weighted_metrics(models: Sequence[ModelRecord]) -> dict[str, float]:
    """Sample-weighted mean of the local models' metrics (what the engine reports per round)."""
    total = sum(m.num_samples for m in models)
    sums: dict[str, float] = {}
    for model in models:
        for key, value in usable_metrics(model.metrics).items():  # rows older than metric validation
            sums[key] = sums.get(key, 0.0) + float(value) * model.num_samples
    return {k: v / total for k, v in sums.items()} if total else {}


def repair_round(run: RunContext, number: int, aggregated: bool) -> None:
    """Finish recording a round whose global model was saved (or not) just before a crash."""
    store, run_id = run.store, run.run_id
    locals_ = store.list_local_models(run_id, round=number)
    samples = sum(m.num_samples for m in locals_)
    if aggregated:
        if not any(m.round == number for m in store.metrics(run_id, scope="server")):
            metrics = _weighted_metrics(locals_)
            if metrics:
                store.record_metrics(run_id, number, metrics, scope="server")
        store.close_round(run_id, number, num_updates=len(locals_), num_samples=samples)
    else:
        store.close_round(run_id, number, status="abandoned", num_updates=len(locals_))
    log.info("round %d: finished recording it after a restart", number)


def load_sync(run: RunContext, latest: ModelRecord, weights: Weights, agents: Sequence[str]) -> SyncRounds:
    """The synchronous rounds after ``latest``: the open round resumed, or the next one to open."""
    global_rounds = {m.round for m in run.store.list_global_models(run.run_id)}
    rounds = {r.round: r for r in run.store.list_rounds(run.run_id)}
    for number, past in sorted(rounds.items()):
        if past.status == "open" and number <= latest.round:
            repair_round(run, number, number in global_rounds)
            rounds.pop(number)
    done = [n for n, r in rounds.items() if r.status != "open"]
    next_round = max([latest.round, *done]) + 1
    lifecycle = run.sync_rounds(weights, next_round, agents)
    current = rounds.get(next_round)
    if current is not None and current.status == "open":
        if lifecycle.finished:  # max_rounds was lowered since the round opened
            run.store.close_round(run.run_id, next_round, status="abandoned")
        else:
            secure = run.config.secagg.enabled  # masked rounds keep no local blobs: the round is abandoned
            stored = [] if secure else _stored_updates(run, run.store.list_local_models(run.run_id, round=next_round))
            lifecycle.resume(current.selected, epoch(current.opened_at), stored)
            log.info("round %d: resumed with %d update(s) already received", next_round, len(stored))
    return lifecycle


def load_async(run: RunContext, latest: ModelRecord, weights: Weights) -> AsyncLifecycle:
    """Version V and the arrivals since: versions are made every ``buffer_size`` arrivals exactly."""
    size = run.config.asynchronous.buffer_size
    arrivals = sorted(run.store.list_local_models(run.run_id), key=lambda m: m.id)
    pending = arrivals[latest.round * size :]
    done = arrivals[: len(arrivals) - len(pending)]
    lifecycle = run.async_rounds(weights, latest.round, [(m.client_id or "", m.round) for m in done])
    for update in _stored_updates(run, pending):
        lifecycle.rounds.add(update)
    return lifecycle
