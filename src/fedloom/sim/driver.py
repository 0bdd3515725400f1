"""The simulation driver: runs the round engine with an executor, evaluates, records, reports.

The driver owns the loop (open round → execute clients → submit → close → evaluate);
the algorithm lives in the Strategy and the state machine in the RoundEngine, exactly
the pieces a deployed aggregator reuses.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from fedloom.algorithms.strategy import Strategy
from fedloom.client.client_state import personal_store
from fedloom.client.personal import PersonalStore
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ClientError, ConfigError, RejectedUpdateError
from fedloom.core.fit import FitConfig
from fedloom.core.reserved import model_part
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundEngine, RoundOutcome, RoundTask
from fedloom.server.recording import StoreRecorder
from fedloom.sim.adversary import Adversary
from fedloom.sim.client_eval import ClientEvaluation, PerClient
from fedloom.sim.clock import ClientSpeeds, training_seconds
from fedloom.sim.executor import ClientFailure, ClientFn, Executor, ExecutorResult, MergedUpdates, SequentialExecutor
from fedloom.sim.history import RoundSummary, SimulationResult
from fedloom.sim.progress import ProgressPrinter

EvaluateFn = Callable[[Weights], Mapping[str, float]]
OnClientError = Literal["fail", "skip"]


def _client_id(index: int) -> str:
    return str(index)


def _resolve_store(store: Any) -> Any:
    if store == "default":
        from fedloom.store import SqlStore

        return SqlStore.open_default()
    return store


def _check_args(num_clients: int, rounds: int, client_sizes: Sequence[int] | None, on_client_error: str) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds} (set --rounds)")
    if client_sizes is not None and len(client_sizes) != num_clients:
        raise ConfigError(f"client_sizes has {len(client_sizes)} entries for {num_clients} clients")
    if on_client_error not in ("fail", "skip"):
        raise ConfigError(f"on_client_error must be 'fail' or 'skip', got {on_client_error!r}")


def _submit_results(engine: RoundEngine, results: Iterable[ExecutorResult], on_client_error: OnClientError) -> None:
    for result in results:
        if isinstance(result, MergedUpdates):
            engine.submit_merged(result.reports, result.partial)
            continue
        if isinstance(result, ClientFailure):
            engine.reject_client(result.client_id, result.code, result.message)
            if on_client_error == "fail":
                raise ClientError(
                    f"client {result.client_id} failed in round {result.round}: {result.message}\n{result.details}"
                )
            continue
        try:
            engine.submit(result)
        except RejectedUpdateError:
            if on_client_error == "fail":
                raise


class _RunLog:
    """The store writes of one run; every method is a no-op when no store is given."""

    def __init__(self, store: Any, name: str, config: Mapping[str, Any], seed: int, keep_local_models: bool) -> None:
        self.store = _resolve_store(store)
        self.run_id: str | None = self.store.create_run(name, "simulation", config, seed) if self.store else None
        self.recorder = (
            StoreRecorder(self.store, self.run_id, keep_local_models=keep_local_models) if self.run_id else None
        )

    def register_clients(self, clients: Sequence[tuple[str, int | None]]) -> None:
        if self.run_id:
            self.store.register_clients(self.run_id, clients)

    def round_done(self, summary: RoundSummary) -> None:
        if self.run_id:
            evaluation = {k: v for k, v in summary.metrics.items() if not k.startswith("train_")}
            self.store.record_metrics(self.run_id, summary.round, {**evaluation, "seconds": summary.seconds})
            for client_id, values in summary.per_client.items():
                self.store.record_metrics(self.run_id, summary.round, values, scope="client", client_id=client_id)

    def home_hint(self) -> str:
        """``DIR`` for a ``--home DIR`` hint when the store is not where the CLI looks by default."""
        from fedloom.store.sql import resolve_home

        home = getattr(self.store, "home", None)
        return str(home) if home is not None and home.resolve() != resolve_home().resolve() else ""

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        if self.run_id:
            self.store.finish_run(self.run_id, status, dict(summary))


def simulate(
    client_fn: ClientFn,
    num_clients: int,
    strategy: Strategy,
    rounds: int,
    *,
    evaluate_fn: EvaluateFn | None = None,
    initial_weights: Weights | None = None,
    client_sizes: Sequence[int] | None = None,
    seed: int = 0,
    executor: Executor | None = None,
    store: Any = "default",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    on_client_error: OnClientError = "fail",
    client_eval_fraction: float = 0.0,
    keep_local_models: bool = False,
    progress: bool | TextIO = True,
    overlap_evaluation: bool = False,
    adversary: Adversary | None = None,
    client_state_dir: str | None = None,
    finetune_epochs: int = 0,
    speeds: ClientSpeeds | None = None,
    deadline_seconds: float | None = None,
) -> SimulationResult:
    """Simulate ``rounds`` of federated training over ``num_clients`` clients.

    ``client_fn(i)`` builds the Trainer of client ``i`` (0-based) on demand, so an idle
    client costs nothing. ``evaluate_fn(weights)`` evaluates the global model centrally
    after every round. ``store="default"`` records the run in ``$FEDLOOM_HOME`` (or
    ``./fedloom-runs``); pass a Store to use another, or ``None`` to keep nothing.
    ``overlap_evaluation=True`` evaluates round r in a driver thread (one torch thread)
    while round r+1 trains; results are the same. Off by default: on a 2-core machine
    it measured no faster than evaluating between rounds (docs/architecture.md).
    ``adversary`` makes a seeded fraction of clients send poisoned models (data
    poisoning such as label flipping belongs in ``client_fn``; see fedloom.sim.adversary).
    With personal keys in the strategy, each client's personal tensors are kept in
    ``client_state_dir`` (default: a temporary folder removed at the end).
    ``finetune_epochs`` adds, to client evaluation, each client's accuracy after that many
    local epochs from the global (or personalised) model (``client_finetuned_*``);
    per-client values are recorded in the store with scope ``client``.
    ``speeds`` simulates client speeds and dropouts (metric ``sim_seconds``: simulated
    wall-clock time); ``deadline_seconds`` refuses clients slower than it. With either,
    lower ``strategy.criteria.threshold`` so a round can close without every client.
    """
    _check_args(num_clients, rounds, client_sizes, on_client_error)
    weights = _initial_weights(strategy, initial_weights if initial_weights is not None else client_fn(0))
    # the full description of the strategy wins over a config's bare strategy name
    run_config = {"num_clients": num_clients, "rounds": rounds, **(config or {}), "strategy": strategy.describe()}
    poison = (adversary, adversary.malicious(num_clients, seed)) if adversary and adversary.poisons_models else None
    if poison:
        run_config["adversary"] = {**vars(poison[0]), "malicious": sorted(poison[1])}
    log = _RunLog(store, run_name or strategy.name, run_config, seed, keep_local_models)
    engine = RoundEngine(strategy, weights, seed=seed, max_rounds=rounds, recorder=log.recorder)
    sizes: Sequence[int | None] = client_sizes or [None] * num_clients
    clients = [(_client_id(i), sizes[i]) for i in range(num_clients)]
    engine.register_clients(clients)
    log.register_clients(clients)
    printer = ProgressPrinter(rounds, progress if not isinstance(progress, bool) else None) if progress else None
    loop = _Loop(engine, executor or SequentialExecutor(), client_fn, evaluate_fn, on_client_error)
    loop.poison = poison
    temporary_state = strategy.keeps_client_state and client_state_dir is None
    loop.state_dir = _client_state_dir(strategy, client_state_dir)
    loop.finetune_epochs = finetune_epochs
    loop.timing = _timing(speeds, deadline_seconds, client_sizes, strategy, seed)
    history: list[RoundSummary] = []
    started = time.perf_counter()

    def emit(summary: RoundSummary) -> None:
        history.append(summary)
        log.round_done(summary)
        if printer:
            printer.update(summary, time.perf_counter() - started)

    evaluator = ThreadPoolExecutor(1, thread_name_prefix="fedloom-eval") if overlap_evaluation else None
    try:
        with _one_torch_thread() if overlap_evaluation else contextlib.nullcontext():
            _run_rounds(loop, rounds, evaluator, emit, num_clients, client_eval_fraction)
    except KeyboardInterrupt:
        log.finish("interrupted", {"rounds_completed": len(history)})
        raise
    except Exception:
        log.finish("failed", {"rounds_completed": len(history)})
        raise
    finally:
        if evaluator:
            evaluator.shutdown(wait=True, cancel_futures=True)
        loop.executor.close()
        if temporary_state and loop.state_dir:
            shutil.rmtree(loop.state_dir, ignore_errors=True)
        if printer:
            printer.close()
    log.finish("finished", {"rounds_completed": len(history), **history[-1].metrics})
    if printer:
        printer.report(history, log.run_id, log.home_hint())
    return SimulationResult(log.run_id, history, model_part(engine.global_weights), run_config)


def _initial_weights(strategy: Strategy, given: Weights | Trainer) -> Weights:
    """The first global model, with whatever state the strategy keeps inside it."""
    weights = given.get_weights() if not isinstance(given, Mapping) else dict(given)
    return strategy.initial_weights(weights)


def _client_state_dir(strategy: Strategy, given: str | None) -> str | None:
    """Where clients keep state between rounds, when the strategy needs it (a temporary folder by default)."""
    if not strategy.keeps_client_state:
        return None
    return given or tempfile.mkdtemp(prefix="fedloom-client-state-")


def _timing(
    speeds: ClientSpeeds | None,
    deadline_seconds: float | None,
    client_sizes: Sequence[int] | None,
    strategy: Strategy,
    seed: int,
) -> _Timing | None:
    """The simulated clock, when speeds or a deadline are asked for."""
    if speeds is None and deadline_seconds is None:
        return None
    if client_sizes is None:
        raise ConfigError("simulated speeds and deadlines need client_sizes (samples per client)")
    return _Timing(speeds or ClientSpeeds(), deadline_seconds, client_sizes, strategy.client.epochs, seed)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Overlapped evaluation shares the cores with the workers: with torch's default of one
    (spin-waiting) OpenMP thread per core it would oversubscribe them, so it gets one."""
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch else 0
    if torch:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch:
            torch.set_num_threads(previous)


def _run_rounds(
    loop: _Loop,
    rounds: int,
    evaluator: ThreadPoolExecutor | None,
    emit: Callable[[RoundSummary], None],
    num_clients: int,
    client_eval_fraction: float,
) -> None:
    """Train every round; evaluate each inline, or in ``evaluator`` while the next one trains."""
    pending: Future[RoundSummary] | None = None
    for _ in range(rounds):
        trained = loop.train_round()
        if pending is not None:
            emit(pending.result())
        if evaluator is None:
            emit(loop.summarize(trained, num_clients, client_eval_fraction))
        else:
            pending = evaluator.submit(loop.summarize, trained, num_clients, client_eval_fraction)
    if pending is not None:
        emit(pending.result())


@dataclass(frozen=True)
class _Trained:
    task: RoundTask
    outcome: RoundOutcome
    started: float
    sim_seconds: float | None = None


class _Timing:
    """Simulated client speeds, dropouts and a round deadline for synchronous rounds.

    A selected client that drops out, or would need longer than the deadline, is refused
    before it trains (codes ``dropped`` / ``deadline``, recorded like any rejection); the
    round lasts as long as its slowest remaining client, or the deadline if anyone missed it.
    """

    def __init__(
        self, speeds: ClientSpeeds, deadline: float | None, sizes: Sequence[int], epochs: int, seed: int
    ) -> None:
        self.speeds, self.deadline, self.sizes, self.epochs, self.seed = speeds, deadline, sizes, epochs, seed
        self.pace = speeds.seconds_per_sample(len(sizes), seed)
        self.clock = 0.0

    def admit(self, engine: RoundEngine, round_no: int, selected: Sequence[str]) -> list[str]:
        """The selected clients that deliver in time; advances the simulated clock by the round's length."""
        kept: list[str] = []
        longest, late = 0.0, False
        for cid in selected:
            seconds = training_seconds(
                self.pace[int(cid)], self.sizes[int(cid)], self.epochs, self.speeds.latency_seconds
            )
            if self.speeds.drops(round_no, cid, self.seed):
                engine.reject_client(cid, "dropped", "the client dropped out of the round (simulated)")
            elif self.deadline is not None and seconds > self.deadline:
                late = True
                engine.reject_client(
                    cid, "deadline", f"the client needs {seconds:.1f} s; the round deadline is {self.deadline} s"
                )
            else:
                kept.append(cid)
                longest = max(longest, seconds)
        self.clock += self.deadline if late and self.deadline is not None else longest
        return kept


class _Loop:
    """One round at a time: open, execute, submit, close, evaluate."""

    def __init__(
        self,
        engine: RoundEngine,
        executor: Executor,
        client_fn: ClientFn,
        evaluate_fn: EvaluateFn | None,
        on_client_error: OnClientError,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.client_fn = client_fn
        self.evaluate_fn = evaluate_fn
        self.on_client_error = on_client_error
        self.poison: tuple[Adversary, frozenset[int]] | None = None
        self.timing: _Timing | None = None
        self.state_dir: str | None = None
        self.finetune_epochs = 0
        self.per_client: dict[int, PerClient] = {}

    def _fit_config(self, client_id: str) -> FitConfig:
        return self.engine.fit_config(client_id)  # the wire's config; the local state_dir goes beside it

    def train_round(self) -> _Trained:
        """Open a round, run its clients, submit their results and aggregate."""
        started = time.perf_counter()
        task = self.engine.open_round()
        selected = self.timing.admit(self.engine, task.round, task.selected) if self.timing else task.selected
        configs = {cid: self._fit_config(cid) for cid in selected}
        merge = self.engine.strategy.mergeable and self.poison is None
        results: Iterable[ExecutorResult] = self.executor.run_round(
            task.round, task.global_weights, configs, self.client_fn, merge, state_dir=self.state_dir
        )
        if self.poison is not None:
            results = self._poisoned(task, list(results))
        _submit_results(self.engine, results, self.on_client_error)
        if not self.engine.criteria_met():
            needed = self.engine.strategy.criteria.required(len(task.selected))
            raise ClientError(
                f"round {task.round}: only {self.engine.received()} of {len(task.selected)} clients "
                f"returned a usable update; the strategy needs {needed}"
                " (lower RoundCriteria.threshold / min_updates to tolerate failing clients)"
            )
        return _Trained(task, self.engine.close_round(), started, self.timing.clock if self.timing else None)

    def _personal(self) -> tuple[tuple[str, ...], PersonalStore] | None:
        keys = self.engine.strategy.personal_keys
        return (keys, personal_store(self.state_dir)) if keys and self.state_dir else None

    def _poisoned(self, task: RoundTask, results: list[ExecutorResult]) -> list[ExecutorResult]:
        """Replace the malicious clients' updates with their attack (which sees the whole round)."""
        assert self.poison is not None
        adversary, malicious = self.poison
        updates = [r for r in results if isinstance(r, ClientUpdate)]
        others = [r for r in results if not isinstance(r, ClientUpdate)]
        return [*adversary.poison(task.round, task.global_weights, updates, malicious, self.engine.seed), *others]

    def summarize(self, trained: _Trained, num_clients: int, client_eval_fraction: float) -> RoundSummary:
        """Evaluate a trained round's global model; safe in another thread (it reads only the outcome)."""
        outcome = trained.outcome
        return RoundSummary(
            round=outcome.round,
            num_selected=len(trained.task.selected),
            num_updates=outcome.num_updates,
            num_samples=outcome.num_samples,
            metrics=self._metrics(outcome, num_clients, client_eval_fraction)
            | ({"sim_seconds": trained.sim_seconds} if trained.sim_seconds is not None else {}),
            seconds=time.perf_counter() - trained.started,
            per_client=self.per_client.pop(outcome.round, {}),
        )

    def _metrics(self, outcome: RoundOutcome, num_clients: int, client_eval_fraction: float) -> dict[str, float]:
        metrics = dict(outcome.client_metrics)
        if self.evaluate_fn is not None:
            metrics.update({k: float(v) for k, v in self.evaluate_fn(model_part(outcome.weights)).items()})
        if client_eval_fraction > 0:
            evaluation = ClientEvaluation(
                client_eval_fraction,
                self.engine.strategy.client,
                self.engine.seed,
                self.finetune_epochs,
                self._personal(),
            )
            averages, per_client = evaluation.run(
                self.client_fn, model_part(outcome.weights), num_clients, outcome.round
            )
            metrics.update(averages)
            self.per_client[outcome.round] = per_client
        return metrics
