"""The simulation driver: the deployed round lifecycle, an executor, evaluation and observers.

The rounds themselves are the deployed aggregator's lifecycle
(:class:`~fedloom.server.rounds.SyncRounds` or the asynchronous buffer), ticked by a
simulated clock (:mod:`fedloom.sim.sync_loop`, :mod:`fedloom.sim.async_loop`); the
algorithm lives in the Strategy. The driver adds what only a simulation has: clients
built on demand, the simulated world (:class:`Environment`), evaluation
(:class:`Evaluation`), and observers told about every round (the store log, the
progress printer, tracking sinks).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from fedloom.algorithms.dp import PrivacySettings, with_privacy
from fedloom.algorithms.secagg import SecAggSettings, check_secure_compatible
from fedloom.algorithms.strategy import Strategy
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.core.observe import RoundObserver, RoundSummary, RunEnd, RunInfo
from fedloom.core.reserved import model_part
from fedloom.core.weights import Weights
from fedloom.server.rounds import ClosePolicy
from fedloom.sim.adversary import Adversary
from fedloom.sim.async_loop import AsyncLoop
from fedloom.sim.clock import ClientSpeeds
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.executor import ClientFn, Executor, SequentialExecutor
from fedloom.sim.history import SimulationResult
from fedloom.sim.judge import RoundJudge
from fedloom.sim.options import Environment, Evaluation, Recording
from fedloom.sim.progress import ProgressPrinter
from fedloom.sim.resume import resume_point
from fedloom.sim.run_log import RunLog, resolve_store
from fedloom.sim.secure_delivery import SecureDelivery
from fedloom.sim.setup import LoopFactory
from fedloom.sim.sync_loop import SyncLoop
from fedloom.sim.track import tracking_feed


def simulate(
    client_fn: ClientFn,
    num_clients: int,
    strategy: Strategy,
    rounds: int,
    *,
    seed: int = 0,
    initial_weights: Weights | None = None,
    environment: Environment | None = None,
    evaluation: Evaluation | None = None,
    executor: Executor | None = None,
    recording: Recording | None = None,
    observers: Sequence[RoundObserver] | None = None,
    privacy: PrivacySettings | None = None,
    secure: SecAggSettings | None = None,
) -> SimulationResult:
    """Simulate ``rounds`` of federated training over ``num_clients`` clients.

    ``client_fn(i)`` builds the Trainer of client ``i`` (0-based) on demand, so an idle client costs nothing;
    ``initial_weights`` default to ``client_fn(0).get_weights()``. ``environment`` is the simulated world (sizes,
    speeds, deadlines, adversaries, asynchronous mode), ``evaluation`` how each round is judged, ``recording`` what
    is kept (by default the run is stored in ``$FEDLOOM_HOME`` or ``./fedloom-runs``). ``observers`` are told about
    the run as it goes (default: a progress printer on stderr; ``[]`` for silence). ``privacy``: user-level DP;
    ``secure``: secure aggregation (docs/privacy.md). Same seed, same settings: bitwise-identical results (not DP).
    """
    world, judged, kept = environment or Environment(), evaluation or Evaluation(), recording or Recording()
    strategy = _checked(strategy, privacy, num_clients, rounds, world, kept)
    weights = _initial_weights(strategy, initial_weights if initial_weights is not None else client_fn(0))
    run_config, poison, secured = _run_config(num_clients, rounds, strategy, world, kept, seed, secure)
    store = resolve_store(kept.store)
    point = resume_point(store, kept.resume, run_config) if kept.resume is not None else None
    state_dir = _client_state_dir(strategy, point.client_state_dir if point else kept.client_state_dir)
    run_config["client_state_dir"] = state_dir  # where a resumed run finds its clients' state
    log = RunLog(store, kept.run_name or strategy.name, run_config, seed, kept.keep_local_models, kept.resume)
    log.register_clients(clients := _clients(num_clients, world.client_sizes))
    runner = executor or SequentialExecutor()
    factory = LoopFactory(strategy, weights, rounds, seed, log.recorder, runner, client_fn, world.on_client_error)
    factory = replace(factory, secure=secured)
    loop = _rounds_loop(factory.resumed(point) if point else factory, world, clients, state_dir, poison)
    rounds_left = rounds - (point.rounds_done if point else 0)
    judge = RoundJudge(strategy, seed, client_fn, num_clients, judged, state_dir)
    info = RunInfo(log.run_id, kept.run_name or strategy.name, "simulation", rounds, seed, run_config, log.home_hint())
    watchers: list[RoundObserver] = [log, *tracking_feed(log.store, kept.tracking), *_shown(observers, rounds)]
    try:
        history = _watched(loop, judge, rounds_left, judged.overlap, info, watchers)
    finally:
        loop.executor.close()
        if kept.client_state_dir is None and state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    return SimulationResult(log.run_id, history, model_part(loop.lifecycle.global_weights), run_config)


def _checked(
    strategy: Strategy,
    privacy: PrivacySettings | None,
    num_clients: int,
    rounds: int,
    world: Environment,
    kept: Recording,
) -> Strategy:
    """The strategy to run after checking the arguments: with ``privacy``, the DP strategy, refusing
    what the accountant cannot account for."""
    _check_args(num_clients, rounds, world.client_sizes)
    if privacy is None:
        return strategy
    if world.asynchronous is not None:
        raise ConfigError(
            "privacy with asynchronous rounds is refused: FedBuff/FedAsync arrivals are not a uniform draw "
            "of clients without replacement, which is the sampling the accountant composes; run synchronously"
        )
    if kept.resume is not None:
        raise ConfigError("resuming a DP simulation is not supported yet (the privacy ledger is not stored)")
    return with_privacy(strategy, privacy, num_clients)


def _run_config(
    num_clients: int,
    rounds: int,
    strategy: Strategy,
    world: Environment,
    kept: Recording,
    seed: int,
    secure: SecAggSettings | None,
) -> tuple[dict[str, Any], tuple[Adversary, frozenset[int]] | None, SecureDelivery | None]:
    """The run's recorded config, with the attack and the secure aggregation it asks for (each checked)."""
    # the full description of the strategy wins over a config's bare strategy name
    run_config = {"num_clients": num_clients, "rounds": rounds, **(kept.config or {}), "strategy": strategy.describe()}
    poison = _poison(world.adversary, num_clients, seed, run_config)
    if secure is not None and kept.keep_local_models:
        raise ConfigError(
            "keep_local_models cannot keep anything under secure aggregation: the server never holds a local"
            " model, only the masked sum; drop keep_local_models (--keep-local-models)"
        )
    return run_config, poison, _secure(secure, strategy, world, seed, run_config)


def _shown(observers: Sequence[RoundObserver] | None, rounds: int) -> Sequence[RoundObserver]:
    """The caller's observers, by default a progress printer (the tracking feed is not one of them)."""
    return observers if observers is not None else [ProgressPrinter(rounds)]


def _rounds_loop(
    factory: LoopFactory,
    world: Environment,
    clients: Sequence[tuple[str, int | None]],
    state_dir: str | None,
    poison: tuple[Adversary, frozenset[int]] | None,
) -> SyncLoop | AsyncLoop:
    """Synchronous rounds under the environment's close policy, or the asynchronous buffer."""
    strategy, epochs = factory.strategy, factory.strategy.client.epochs
    if world.asynchronous is None:
        criteria = strategy.criteria
        policy = ClosePolicy(criteria.threshold, criteria.min_updates, world.deadline_seconds, world.on_deadline)
        timing = SimEnvironment.build(world.speeds, world.deadline_seconds, world.client_sizes, epochs, factory.seed)
        return factory.sync_loop(clients, policy, timing, state_dir, poison)
    arrivals = SimEnvironment.build(world.speeds or ClientSpeeds(), None, world.client_sizes, epochs, factory.seed)
    assert arrivals is not None
    return factory.async_loop(world.asynchronous, arrivals, world.concurrency, state_dir)


def _watched(
    loop: SyncLoop | AsyncLoop,
    judge: RoundJudge,
    rounds: int,
    overlap: bool,
    info: RunInfo,
    watchers: Sequence[RoundObserver],
) -> list[RoundSummary]:
    """Run every round, telling the watchers; a failure or Ctrl-C ends the run with that status."""
    history: list[RoundSummary] = []

    def emit(summary: RoundSummary) -> None:
        history.append(summary)
        for watcher in watchers:
            watcher.on_round(summary)

    def end(status: str) -> None:
        metrics = history[-1].metrics if history and status == "finished" else {}
        for watcher in watchers:
            watcher.on_finish(info, RunEnd(status, len(history), metrics))

    for watcher in watchers:
        watcher.on_start(info)
    try:
        _run_rounds(loop, judge, rounds, overlap, emit)
    except KeyboardInterrupt:
        end("interrupted")
        raise
    except Exception:
        end("failed")
        raise
    end("finished")
    return history


def _run_rounds(
    loop: SyncLoop | AsyncLoop, judge: RoundJudge, rounds: int, overlap: bool, emit: Callable[[RoundSummary], None]
) -> None:
    """Train every round; judge each inline, or (``overlap``) in a thread while the next one trains."""
    if not overlap:
        for _ in range(rounds):
            if loop.lifecycle.finished:  # ended early (a DP run's ε budget is spent)
                return
            emit(judge.summarize(loop.run_round()))
        return
    pending: Future[RoundSummary] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="fedloom-eval") as evaluator, _one_torch_thread():
        try:
            for _ in range(rounds):
                if loop.lifecycle.finished:
                    break
                trained = loop.run_round()
                if pending is not None:
                    emit(pending.result())
                pending = evaluator.submit(judge.summarize, trained)
            if pending is not None:
                emit(pending.result())
        finally:
            evaluator.shutdown(wait=True, cancel_futures=True)


def _client_id(index: int) -> str:
    return str(index)


def _clients(num_clients: int, client_sizes: Sequence[int] | None) -> list[tuple[str, int | None]]:
    """Every client's id and (when known) its size, which caps the samples it may claim."""
    sizes: Sequence[int | None] = client_sizes or [None] * num_clients
    return [(_client_id(i), sizes[i]) for i in range(num_clients)]


def _check_args(num_clients: int, rounds: int, client_sizes: Sequence[int] | None) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds} (set --rounds)")
    if client_sizes is not None and len(client_sizes) != num_clients:
        raise ConfigError(f"client_sizes has {len(client_sizes)} entries for {num_clients} clients")


def _secure(
    secure: SecAggSettings | None, strategy: Strategy, world: Environment, seed: int, run_config: dict[str, Any]
) -> SecureDelivery | None:
    """Secure aggregation of every round when asked for, refused where it cannot run (saying why)."""
    if secure is None:
        if world.secagg_dropout:
            raise ConfigError("secagg_dropout needs secure aggregation: pass secure=SecAggSettings(...) (--secagg)")
        return None
    check_secure_compatible(strategy)
    if world.asynchronous is not None:
        raise ConfigError(
            "secure aggregation runs synchronous rounds only: an asynchronous buffer aggregates each update"
            " as it arrives, so there is no round of clients to mask against each other; drop asynchronous"
        )
    if world.deadline_seconds is not None:
        raise ConfigError(
            "a simulated secure-aggregation round ends when its protocol does; deadline_seconds is not"
            " supported with it (simulate late clients with secagg_dropout instead)"
        )
    import fedloom.algorithms.secagg.client  # noqa: F401  (fails now, naming the extra, if 'cryptography' is missing)

    dropout = dict(world.secagg_dropout or {})
    run_config["secure_aggregation"] = {**secure.describe(), "dropout": dropout}
    return SecureDelivery(secure, seed, dropout)


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
