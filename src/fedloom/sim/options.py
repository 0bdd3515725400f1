"""The few objects ``simulate`` takes besides the clients, the strategy and the rounds.

- :class:`Environment`: the simulated world — client sizes, speeds and dropouts, the
  round deadline and what it does, adversaries, asynchronous arrivals, failing clients.
- :class:`Evaluation`: how each round's global model is judged (centrally, on clients).
- :class:`Recording`: what is kept — the store, the run's name and config, local models.

Each has defaults that make sense alone, so ``simulate(client_fn, n, strategy, rounds)``
runs, and a reader of a call sees at once which of the three it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fedloom.core.errors import ConfigError
from fedloom.core.weights import Weights
from fedloom.server.rounds import DEADLINE_POLICIES, AsyncSettings, DeadlinePolicy
from fedloom.sim.adversary import Adversary
from fedloom.sim.clock import ClientSpeeds
from fedloom.sim.secure_delivery import check_dropout
from fedloom.tracking.settings import TrackingSettings

EvaluateFn = Callable[[Weights], Mapping[str, float]]
OnClientError = Literal["fail", "skip"]


@dataclass(frozen=True)
class Environment:
    """The simulated world the clients live in.

    ``client_sizes`` (samples per client) cap what each client may claim and, with
    ``speeds``, give its simulated training time. ``secagg_dropout`` drops clients at the
    stages of secure aggregation (``simulate(..., secure=...)``). ``deadline_seconds`` gives every
    synchronous round a deadline and ``on_deadline`` says what it does (``aggregate`` what
    arrived, ``extend``, ``abandon``): the deployed close policy, by the same code.
    ``asynchronous`` runs FedBuff / FedAsync instead of rounds, ``concurrency`` clients
    training at once. ``adversary`` makes a seeded fraction of clients send poisoned
    models. ``on_client_error="skip"`` records a crashing client and goes on.
    """

    client_sizes: Sequence[int] | None = None
    speeds: ClientSpeeds | None = None
    deadline_seconds: float | None = None
    on_deadline: DeadlinePolicy = "aggregate"
    adversary: Adversary | None = None
    asynchronous: AsyncSettings | None = None
    concurrency: int = 10
    on_client_error: OnClientError = "fail"
    #: with secure aggregation: the probability that a client drops out at each stage (advertise,
    #: share, collect, unmask), drawn from rng_for(seed, "secagg-dropout", round, stage)
    secagg_dropout: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.on_deadline not in DEADLINE_POLICIES:
            raise ConfigError(f"on_deadline must be one of {DEADLINE_POLICIES}, got {self.on_deadline!r}")
        if self.on_client_error not in ("fail", "skip"):
            raise ConfigError(f"on_client_error must be 'fail' or 'skip', got {self.on_client_error!r}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.secagg_dropout:
            check_dropout(self.secagg_dropout)


@dataclass(frozen=True)
class Evaluation:
    """How every round's global model is judged.

    ``central(weights)`` evaluates it on held-out data; ``client_fraction`` of the clients
    (seeded) evaluate it on their own data, ``finetune_epochs`` adds their accuracy after
    that many local epochs; ``overlap=True`` evaluates round r in a thread while round r+1
    trains (same results; measured no faster on 2 cores, docs/architecture.md).
    """

    central: EvaluateFn | None = None
    client_fraction: float = 0.0
    finetune_epochs: int = 0
    overlap: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.client_fraction <= 1.0:
            raise ConfigError(f"client_fraction must be in [0, 1], got {self.client_fraction}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")


@dataclass(frozen=True)
class Recording:
    """What a run keeps: ``store="default"`` is ``$FEDLOOM_HOME`` (or ``./fedloom-runs``), a
    Store object another one, ``None`` nothing; ``keep_local_models`` keeps every local
    model's tensors too; ``client_state_dir`` holds what clients keep between rounds
    (default: a temporary folder removed at the end); ``resume`` continues an interrupted
    run (same client_fn, strategy, clients and rounds) from where the store says it stopped;
    ``tracking`` feeds TensorBoard / MLflow / W&B (docs/tracking.md)."""

    store: Any = "default"
    run_name: str | None = None
    config: Mapping[str, Any] | None = None
    keep_local_models: bool = False
    client_state_dir: str | None = None
    #: the id of an interrupted run in ``store`` to continue (:mod:`fedloom.sim.resume`)
    resume: str | None = None
    #: tracking sinks fed from the store after every round (``TrackingSettings(sinks=("tensorboard",))``)
    tracking: TrackingSettings | None = None


__all__ = ["Environment", "EvaluateFn", "Evaluation", "OnClientError", "Recording"]
