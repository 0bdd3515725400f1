"""What an algorithm unit is and what it may declare it can do, as Protocols.

An algorithm is one module (``algorithms/<name>.py``) holding its server part (an
Aggregator) and, when its clients do something special, its client part: small explicit
functions over weights and the client's kept state. Optional capabilities are declared
by implementing one of the Protocols below and are checked with ``isinstance`` on the
Protocol, so a capability is a typed contract (mypy checks the signature), never a
guessed attribute name. The client side of a strategy is named on the wire
(``FitConfig.extra["client_parts"]``) and looked up in the registry
(:func:`fedloom.algorithms.registry.client_parts`), so a deployed agent and the
simulation run exactly the same client code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.terms import ClientTerms
from fedloom.core.weights import Weights

#: the wire key (``FitConfig.extra``) naming the client parts a strategy's clients run, in order
CLIENT_PARTS_KEY = "client_parts"


@dataclass(frozen=True)
class ClientRound:
    """What a client part sees of one fit.

    ``model``: the model training starts from (reserved tensors removed, the client's
    personal tensors put over it). ``reserved``: the global model's reserved tensors
    (``fedloom.*``: the server state clients read). ``kept``: what this part kept at this
    client after its last fit (empty at first). ``config``: the wire's FitConfig.
    """

    model: Weights
    reserved: Weights
    kept: Weights
    config: FitConfig


@dataclass(frozen=True)
class ClientOutcome:
    """A client part's answer after training: ``sent`` (reserved tensors uploaded with the model)
    and ``kept`` (this client's new state, stored locally until its next fit)."""

    sent: Weights
    kept: Weights


class ClientPart(Protocol):
    """An algorithm's client side: the terms a trainer adds, then what is sent and kept."""

    @property
    def name(self) -> str:
        """The registry name clients look the part up by."""
        ...

    @property
    def keeps_state(self) -> bool:
        """Whether the client keeps ``ClientOutcome.kept`` between rounds (needs a state directory)."""
        ...

    def terms(self, step: ClientRound) -> ClientTerms:
        """The gradient terms (and reports) the trainer gets for this fit."""
        ...

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        """From the trained result: the reserved tensors to send and the state to keep."""
        ...


@runtime_checkable
class HasClientPart(Protocol):
    """An aggregator whose clients run a client part (SCAFFOLD, FedCurv, FedDyn)."""

    def client_part(self) -> ClientPart: ...


@runtime_checkable
class SeedsInitialModel(Protocol):
    """An aggregator that adds reserved tensors (server state clients read) to the initial model."""

    def initial(self, weights: Mapping[str, np.ndarray]) -> Weights: ...


@runtime_checkable
class SendsClientExtra(Protocol):
    """An aggregator that sends wire values to every client in ``FitConfig.extra`` (JSON only)."""

    def client_extra(self) -> dict[str, Any]: ...


@runtime_checkable
class Describable(Protocol):
    """A strategy part with a JSON description of its own (stored with every run)."""

    def describe(self) -> Any: ...


@runtime_checkable
class Named(Protocol):
    """A strategy part that has at least a name."""

    @property
    def name(self) -> str: ...


@runtime_checkable
class ReportsRoundMetrics(Protocol):
    """An accumulator that measures its own round (DP: ε, clip norm), stored as the round's
    server metrics; ``ends_run`` says the run must not open another round (a spent ε budget)."""

    def round_metrics(self) -> dict[str, float]: ...

    @property
    def ends_run(self) -> bool: ...


@runtime_checkable
class RunScoped(Protocol):
    """An aggregator that keeps state over a run (DP's privacy ledger): the round engine calls
    ``begin_run(rounds_done)`` when it starts, so nothing carries over from another run."""

    def begin_run(self, rounds_done: int) -> None: ...


@runtime_checkable
class SumsSecurely(Protocol):
    """An aggregator that can be fed the unmasked sum of its clients' updates, each weighted 1
    (secure aggregation): DP in client and local modes, where every client clipped and noised
    its own update, so the server needs only the sum. ``takes_secure_sum`` is False when the
    configuration needs each update on its own (central DP clips them on the server)."""

    @property
    def takes_secure_sum(self) -> bool: ...


@runtime_checkable
class TakesSecureSum(Protocol):
    """A round's accumulator that folds in ``Σ Δ_k`` of ``senders`` (``Δ = w − g``, float64)."""

    def add_secure_sum(self, delta_sum: Mapping[str, np.ndarray], senders: Sequence[str]) -> None: ...
