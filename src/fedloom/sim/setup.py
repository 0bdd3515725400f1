"""Building a simulation's lifecycle: synchronous rounds or the asynchronous buffer, over the
same strategy, seed, recorder, executor and clients (the driver picks one)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from fedloom.algorithms.server_opt import ServerOptState
from fedloom.algorithms.strategy import Strategy
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundEngine, RoundRecorder
from fedloom.server.rounds import AsyncLifecycle, AsyncSettings, ClosePolicy, SyncRounds
from fedloom.sim.adversary import Adversary
from fedloom.sim.async_loop import AsyncLoop
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.executor import ClientFn, Executor, ExecutorResult
from fedloom.sim.resume import ResumePoint
from fedloom.sim.secure_delivery import SecureDelivery
from fedloom.sim.sync_loop import Poison, SyncLoop


@dataclass(frozen=True)
class _WithLocalContext:
    """The run's executor, handing every fit what only this process knows (where clients keep
    their state) beside the wire configs, never inside them (fedloom.client.client_state)."""

    executor: Executor
    state_dir: str | None

    def run_round(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        client_fn: ClientFn,
        merge: bool = False,
        state_dir: str | None = None,
    ) -> Iterator[ExecutorResult]:
        return self.executor.run_round(round, weights, configs, client_fn, merge, state_dir=self.state_dir)

    def close(self) -> None:
        self.executor.close()


@dataclass(frozen=True)
class LoopFactory:
    """What both lifecycles of a simulation are built from."""

    strategy: Strategy
    weights: Weights
    rounds: int
    seed: int
    recorder: RoundRecorder | None
    executor: Executor
    client_fn: ClientFn
    on_client_error: str
    start_round: int = 1
    server_opt_state: ServerOptState | None = None
    sim_seconds: float = 0.0
    secure: SecureDelivery | None = None

    def resumed(self, point: ResumePoint) -> LoopFactory:
        """The same factory, starting where an interrupted run stopped."""
        weights = point.weights if point.weights is not None else self.weights
        start = point.rounds_done + 1
        return replace(
            self,
            weights=weights,
            start_round=start,
            server_opt_state=point.server_opt_state,
            sim_seconds=point.sim_seconds,
        )

    def sync_loop(
        self,
        clients: Sequence[tuple[str, int | None]],
        policy: ClosePolicy,
        environment: SimEnvironment | None,
        state_dir: str | None,
        poison: tuple[Adversary, frozenset[int]] | None,
    ) -> SyncLoop:
        engine = RoundEngine(
            self.strategy,
            self.weights,
            seed=self.seed,
            max_rounds=self.rounds,
            start_round=self.start_round,
            recorder=self.recorder,
            server_opt_state=self.server_opt_state,
        )
        engine.register_clients(clients)
        return SyncLoop(
            SyncRounds(engine, policy),
            _WithLocalContext(self.executor, state_dir),
            self.client_fn,
            engine.fit_config,
            environment,
            self.on_client_error == "fail",
            Poison(poison[0], poison[1], self.seed) if poison else None,
            self.sim_seconds,
            self.secure,
        )

    def async_loop(
        self,
        settings: AsyncSettings,
        environment: SimEnvironment,
        concurrency: int,
        state_dir: str | None,
    ) -> AsyncLoop:
        if settings.buffer_size > len(environment.sizes):
            raise ConfigError(
                f"buffer_size ({settings.buffer_size}) cannot exceed the number of clients ({len(environment.sizes)})"
            )
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        rounds = settings.start(self.weights, 0, self.rounds)
        lifecycle = AsyncLifecycle(rounds, self.strategy.client, self.seed, self.recorder)
        return AsyncLoop(
            lifecycle,
            _WithLocalContext(self.executor, state_dir),
            self.client_fn,
            lambda config: config,  # the wire config as it is; the state folder travels beside it
            environment,
            concurrency,
            self.seed,
            self.on_client_error == "fail",
        )
