"""The simulation driver: the deployed round lifecycle, an executor, evaluation, records, progress.

The rounds themselves are the deployed aggregator's :class:`~fedloom.server.rounds.SyncRounds`
(ticked by a simulated clock in :mod:`fedloom.sim.sync_loop`); the algorithm lives in
the Strategy. The driver adds what only a simulation has: building clients on demand,
central and per-client evaluation, and the progress table.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TextIO

from fedloom.algorithms.strategy import Strategy
from fedloom.client.client_state import personal_store
from fedloom.client.personal import PersonalStore
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.core.reserved import model_part
from fedloom.core.weights import Weights
from fedloom.server.rounds import AsyncSettings, ClosePolicy, DeadlinePolicy, RoundClosed
from fedloom.sim.adversary import Adversary
from fedloom.sim.async_loop import AsyncLoop
from fedloom.sim.client_eval import ClientEvaluation, PerClient
from fedloom.sim.clock import ClientSpeeds
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.executor import ClientFn, Executor, SequentialExecutor
from fedloom.sim.history import RoundSummary, SimulationResult
from fedloom.sim.progress import ProgressPrinter
from fedloom.sim.run_log import RunLog
from fedloom.sim.setup import LoopFactory
from fedloom.sim.sync_loop import SyncLoop, TrainedRound

EvaluateFn = Callable[[Weights], Mapping[str, float]]
OnClientError = Literal["fail", "skip"]


def _client_id(index: int) -> str:
    return str(index)


def _clients(num_clients: int, client_sizes: Sequence[int] | None) -> list[tuple[str, int | None]]:
    """Every client's id and (when known) its size, which caps the samples it may claim."""
    sizes: Sequence[int | None] = client_sizes or [None] * num_clients
    return [(_client_id(i), sizes[i]) for i in range(num_clients)]


def _check_args(num_clients: int, rounds: int, client_sizes: Sequence[int] | None, on_client_error: str) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds} (set --rounds)")
    if client_sizes is not None and len(client_sizes) != num_clients:
        raise ConfigError(f"client_sizes has {len(client_sizes)} entries for {num_clients} clients")
    if on_client_error not in ("fail", "skip"):
        raise ConfigError(f"on_client_error must be 'fail' or 'skip', got {on_client_error!r}")


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
    on_deadline: DeadlinePolicy = "aggregate",
    asynchronous: AsyncSettings | None = None,
    concurrency: int = 10,
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
    wall-clock time); ``deadline_seconds`` gives each round a deadline, and ``on_deadline``
    says what happens when it passes (``aggregate`` what arrived, ``extend``, ``abandon``)
    — the deployed aggregator's close policy, applied by the same code.
    ``asynchronous`` runs FedBuff / FedAsync instead (the deployed asynchronous lifecycle):
    ``concurrency`` clients train at once and ``rounds`` counts the versions made.
    """
    _check_args(num_clients, rounds, client_sizes, on_client_error)
    weights = _initial_weights(strategy, initial_weights if initial_weights is not None else client_fn(0))
    # the full description of the strategy wins over a config's bare strategy name
    run_config = {"num_clients": num_clients, "rounds": rounds, **(config or {}), "strategy": strategy.describe()}
    poison = _poison(adversary, num_clients, seed, run_config)
    log = RunLog(store, run_name or strategy.name, run_config, seed, keep_local_models)
    log.register_clients(clients := _clients(num_clients, client_sizes))
    printer = ProgressPrinter(rounds, progress if not isinstance(progress, bool) else None) if progress else None
    temporary_state = strategy.keeps_client_state and client_state_dir is None
    state_dir = _client_state_dir(strategy, client_state_dir)
    setup = LoopFactory(
        strategy, weights, rounds, seed, log.recorder, executor or SequentialExecutor(), client_fn, on_client_error
    )
    if asynchronous is None:
        policy = ClosePolicy(strategy.criteria.threshold, strategy.criteria.min_updates, deadline_seconds, on_deadline)
        environment = SimEnvironment.build(speeds, deadline_seconds, client_sizes, strategy.client.epochs, seed)
        rounds_loop: SyncLoop | AsyncLoop = setup.sync_loop(clients, policy, environment, state_dir, poison)
    else:
        world = SimEnvironment.build(speeds or ClientSpeeds(), None, client_sizes, strategy.client.epochs, seed)
        assert world is not None
        rounds_loop = setup.async_loop(asynchronous, world, concurrency, state_dir)
    loop = _Loop(rounds_loop, strategy, seed, client_fn, evaluate_fn, state_dir, finetune_epochs)
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
        rounds_loop.executor.close()
        if temporary_state and state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
        if printer:
            printer.close()
    log.finish("finished", {"rounds_completed": len(history), **history[-1].metrics})
    if printer:
        printer.report(history, log.run_id, log.home_hint())
    return SimulationResult(log.run_id, history, model_part(rounds_loop.lifecycle.global_weights), run_config)


def _poison(
    adversary: Adversary | None, num_clients: int, seed: int, run_config: dict[str, Any]
) -> tuple[Adversary, frozenset[int]] | None:
    """The attack and its malicious clients (recorded in the run's config), when models are poisoned."""
    if adversary is None or not adversary.poisons_models:
        return None
    malicious = adversary.malicious(num_clients, seed)
    run_config["adversary"] = {**vars(adversary), "malicious": sorted(malicious)}
    return adversary, malicious


def _initial_weights(strategy: Strategy, given: Weights | Trainer) -> Weights:
    """The first global model, with whatever state the strategy keeps inside it."""
    weights = given.get_weights() if not isinstance(given, Mapping) else dict(given)
    return strategy.initial_weights(weights)


def _client_state_dir(strategy: Strategy, given: str | None) -> str | None:
    """Where clients keep state between rounds, when the strategy needs it (a temporary folder by default)."""
    if not strategy.keeps_client_state:
        return None
    return given or tempfile.mkdtemp(prefix="fedloom-client-state-")


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


class _Loop:
    """Train a round through the lifecycle, then evaluate its global model."""

    def __init__(
        self,
        rounds: SyncLoop | AsyncLoop,
        strategy: Strategy,
        seed: int,
        client_fn: ClientFn,
        evaluate_fn: EvaluateFn | None,
        state_dir: str | None,
        finetune_epochs: int,
    ) -> None:
        self.rounds = rounds
        self.strategy = strategy
        self.seed = seed
        self.client_fn = client_fn
        self.evaluate_fn = evaluate_fn
        self.state_dir = state_dir
        self.finetune_epochs = finetune_epochs
        self.per_client: dict[int, PerClient] = {}

    def train_round(self) -> TrainedRound:
        return self.rounds.run_round()

    def _personal(self) -> tuple[tuple[str, ...], PersonalStore] | None:
        keys = self.strategy.personal_keys
        return (keys, personal_store(self.state_dir)) if keys and self.state_dir else None

    def summarize(self, trained: TrainedRound, num_clients: int, client_eval_fraction: float) -> RoundSummary:
        """Evaluate a trained round's global model; safe in another thread (it reads only the outcome).

        An abandoned round made no model: its summary evaluates the unchanged one and says
        ``abandoned = 1``."""
        end = trained.end
        if isinstance(end, RoundClosed):
            outcome = end.outcome
            number, updates, samples, weights = outcome.round, outcome.num_updates, outcome.num_samples, outcome.weights
            metrics = self._metrics(outcome.client_metrics, weights, number, num_clients, client_eval_fraction)
        else:
            number, updates, samples, weights = end.round, end.num_updates, 0, trained.start_weights
            metrics = {**self._metrics({}, weights, number, num_clients, client_eval_fraction), "abandoned": 1.0}
        if trained.sim_seconds is not None:
            metrics["sim_seconds"] = trained.sim_seconds
        return RoundSummary(
            round=number,
            num_selected=trained.num_selected,
            num_updates=updates,
            num_samples=samples,
            metrics=metrics,
            seconds=time.perf_counter() - trained.started,
            per_client=self.per_client.pop(number, {}),
        )

    def _metrics(
        self,
        client_metrics: Mapping[str, float],
        weights: Weights,
        round_no: int,
        num_clients: int,
        client_eval_fraction: float,
    ) -> dict[str, float]:
        metrics = dict(client_metrics)
        if self.evaluate_fn is not None:
            metrics.update({k: float(v) for k, v in self.evaluate_fn(model_part(weights)).items()})
        if client_eval_fraction > 0:
            evaluation = ClientEvaluation(
                client_eval_fraction,
                self.strategy.client,
                self.seed,
                self.finetune_epochs,
                self._personal(),
            )
            averages, per_client = evaluation.run(self.client_fn, model_part(weights), num_clients, round_no)
            metrics.update(averages)
            self.per_client[round_no] = per_client
        return metrics
