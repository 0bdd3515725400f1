"""The round engine: the one state machine that runs FL rounds, in simulation and deployment.

    IDLE --open_round()--> COLLECTING --close_round()--> IDLE ... --> FINISHED

The engine never knows whether clients are simulated or real processes: a simulation
executor and the HTTP API both end in :meth:`RoundEngine.submit`. Every refused update
raises :class:`RejectedUpdateError` with a reason code *and* is reported to the
recorder, so nothing is silently dropped, and a refused update changes no state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.algorithms.server_opt import ServerOptState, check_state
from fedloom.algorithms.strategy import Accumulator, MergeableAccumulator, Strategy
from fedloom.algorithms.units import ReportsRoundMetrics, RunScoped, TakesSecureSum
from fedloom.core.errors import FedloomError, NonFiniteError, RejectedUpdateError, ValidationError
from fedloom.core.fit import FitConfig
from fedloom.core.metrics import add_client_metrics, round_client_metrics
from fedloom.core.update import ClientUpdate, UpdateReport
from fedloom.core.weights import Weights, copy_weights, validate_weights
from fedloom.server.round_types import RoundOutcome, RoundRecorder, RoundSynthesis, RoundTask

__all__ = ["EngineState", "EngineStateError", "RoundEngine", "RoundOutcome", "RoundRecorder", "RoundTask"]


def _frozen(weights: Weights) -> Weights:
    """A read-only copy: a Trainer that writes into the global model it was handed fails loudly
    instead of silently corrupting the model every other client receives."""
    frozen = copy_weights(weights)
    for array in frozen.values():
        array.flags.writeable = False
    return frozen


class EngineState(enum.Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    FINISHED = "finished"


class EngineStateError(FedloomError):
    """An engine method was called in a state that does not allow it (a programming error)."""


@dataclass
class _OpenRound:
    task: RoundTask
    accumulator: Accumulator
    started: float
    received: dict[str, int] = field(default_factory=dict)
    metric_sums: dict[str, float] = field(default_factory=dict)
    rejected: int = 0


class RoundEngine:
    """Runs rounds for one federation: select, accept/reject, check criteria, aggregate, advance."""

    def __init__(
        self,
        strategy: Strategy,
        initial_weights: Weights,
        *,
        seed: int = 0,
        max_rounds: int | None = None,
        start_round: int = 1,
        recorder: RoundRecorder | None = None,
        server_opt_state: ServerOptState | None = None,
        synthesis: RoundSynthesis | None = None,
    ) -> None:
        """``server_opt_state`` resumes the strategy's server optimiser (e.g. after a restart);
        without it the optimiser starts fresh from ``initial_weights``. ``synthesis`` turns each
        round's aggregate into the next global model (one cluster of a federation)."""
        validate_weights(initial_weights)
        self.strategy = strategy
        self._opt_state = self._initial_opt_state(strategy, initial_weights, server_opt_state)
        self.seed = seed
        self.max_rounds = max_rounds
        self.recorder = recorder
        self.synthesis = synthesis
        self._global = _frozen(initial_weights)
        self._next_round = start_round
        self._clients: dict[str, int | None] = {}
        self._open: _OpenRound | None = None
        self._finished = max_rounds is not None and start_round > max_rounds
        if isinstance(strategy.aggregator, RunScoped):
            strategy.aggregator.begin_run(start_round - 1)

    @staticmethod
    def _initial_opt_state(strategy: Strategy, weights: Weights, saved: ServerOptState | None) -> ServerOptState | None:
        if strategy.server_opt is None:
            return None
        fresh = strategy.server_opt.init(weights)
        if saved is None:
            return fresh
        check_state(saved, fresh)
        return saved

    @property
    def server_opt_state(self) -> ServerOptState | None:
        """The server optimiser's state after the last closed round (None without one)."""
        return self._opt_state

    # -- clients -----------------------------------------------------------------
    def register_client(self, client_id: str, num_samples: int | None = None) -> None:
        """Make a client eligible for selection; ``num_samples`` (if known) caps what it may claim."""
        if not client_id:
            raise ValidationError("client_id must be a non-empty string")
        self._clients[client_id] = num_samples

    def register_clients(self, clients: Iterable[tuple[str, int | None]]) -> None:
        for client_id, num_samples in clients:
            self.register_client(client_id, num_samples)

    def unregister_client(self, client_id: str) -> None:
        """Never select ``client_id`` again (its token was revoked); if the open round selected it
        and has no update from it yet, the round stops waiting for it."""
        self._clients.pop(client_id, None)
        open_round = self._open
        if open_round is None or client_id in open_round.received or client_id not in open_round.task.selected:
            return
        kept = tuple(c for c in open_round.task.selected if c != client_id)
        open_round.task = replace(open_round.task, selected=kept)

    @property
    def clients(self) -> tuple[str, ...]:
        return tuple(self._clients)

    # -- state -------------------------------------------------------------------
    @property
    def state(self) -> EngineState:
        if self._finished:
            return EngineState.FINISHED
        return EngineState.COLLECTING if self._open else EngineState.IDLE

    @property
    def global_weights(self) -> Weights:
        """A copy of the current global model."""
        return copy_weights(self._global)

    @property
    def open_task(self) -> RoundTask | None:
        """The collecting round's task (its selection shrinks when a client is unregistered)."""
        return self._open.task if self._open else None

    @property
    def current_round(self) -> int:
        """The open round, or the next one to open."""
        return self._open.task.round if self._open else self._next_round

    def _require(self, state: EngineState, action: str) -> None:
        if self.state is not state:
            raise EngineStateError(f"cannot {action} while the engine is {self.state.value}")

    # -- the round ---------------------------------------------------------------
    def open_round(self, selected: Sequence[str] | None = None) -> RoundTask:
        """Select clients with the strategy's sampler and start collecting their updates.

        ``selected`` re-opens a round whose selection was already made and recorded (a
        restarted aggregator resuming its open round): it is used as is instead of
        sampling, because agents that registered after the round opened would change
        what the sampler draws. Every id in it must be a registered client.
        """
        self._require(EngineState.IDLE, "open a round")
        round_no = self._next_round
        if selected is None:
            chosen = tuple(self.strategy.sampler.sample(list(self._clients), round_no, self.seed))
        else:
            chosen = tuple(selected)
            unknown = sorted(set(chosen) - set(self._clients))
            if unknown:
                raise ValidationError(f"cannot re-open round {round_no}: clients {unknown} are not registered")
        task = RoundTask(round=round_no, global_weights=self._global, selected=chosen)
        accumulator = self.strategy.start_accumulator(self._global, num_clients=len(self._clients))
        self._open = _OpenRound(task=task, accumulator=accumulator, started=time.perf_counter())
        if self.recorder:
            self.recorder.round_opened(round_no, chosen)
        return task

    def fit_config(self, client_id: str) -> FitConfig:
        """The config a selected client trains with in the open round."""
        self._require(EngineState.COLLECTING, "build a fit config")
        assert self._open is not None
        return self.strategy.client.fit_config(self._open.task.round, client_id, self.seed)

    def _reject(self, update_round: int | None, client_id: str | None, code: str, reason: str) -> RejectedUpdateError:
        if self._open:
            self._open.rejected += 1
        if self.recorder:
            self.recorder.update_rejected(update_round, client_id, code, reason)
        return RejectedUpdateError(code, reason)

    def _check_identity(self, client_id: str, round: int, num_samples: int) -> tuple[str, str] | None:
        """The (code, reason) for refusing an update from ``client_id`` for ``round``, or None."""
        if self._open is None:
            return "round_closed", f"no round is open (next round is {self._next_round})"
        current = self._open.task.round
        if round != current:
            return "wrong_round", f"update is for round {round} but round {current} is open"
        if client_id not in self._clients:
            return "unknown_client", f"client {client_id!r} is not registered"
        if client_id not in self._open.task.selected:
            return "not_selected", f"client {client_id!r} was not selected for round {current}"
        if client_id in self._open.received:
            return "duplicate", f"client {client_id!r} already sent an update for round {current}"
        cap = self._clients[client_id]
        if cap is not None and num_samples > cap:
            return "bad_num_samples", f"client claims {num_samples} samples but holds {cap}"
        return None

    def _check(self, update: ClientUpdate) -> tuple[str, str] | None:
        """The (code, reason) for refusing ``update``, or None if it is acceptable."""
        problem = self._check_identity(update.client_id, update.round, update.num_samples)
        if problem:
            return problem
        try:
            validate_weights(update.weights, self._global)
        except ValidationError as exc:
            return "invalid_weights", str(exc)
        model_filter = self.strategy.update_filter
        reason = model_filter.check(update.weights, self._global) if model_filter else None
        return ("filtered", reason) if reason else None

    def submit(self, update: ClientUpdate) -> None:
        """Accept ``update`` into the open round, or raise (and record) why not."""
        problem = self._check(update)
        if problem:
            raise self._reject(update.round, update.client_id, *problem)
        assert self._open is not None
        try:
            self._open.accumulator.add(update)
        except NonFiniteError as exc:  # its sums would overflow: the accumulator refused it before changing
            raise self._reject(update.round, update.client_id, "invalid_weights", str(exc)) from None
        self._note_accepted(update.report(), update.weights)

    def submit_merged(self, reports: Sequence[UpdateReport], partial: WeightedMeanAccumulator) -> None:
        """Accept a partial sum that already folds in the updates described by ``reports``.

        Used by simulation workers that pre-merge their clients (O(workers x model) traffic).
        The workers validated each update's tensors against this round's global model;
        here every report's identity is checked. Since merged tensors cannot be taken out
        again, a report that fails these checks is an executor bug and raises
        :class:`EngineStateError` before anything is merged.
        """
        accumulator = self._merge_target("accept merged updates", reports)
        if not isinstance(accumulator, MergeableAccumulator) or self.strategy.update_filter is not None:
            raise EngineStateError(f"strategy {self.strategy.name!r} cannot take pre-merged partial results")
        if partial.count != len(reports) or partial.total_weight != sum(r.num_samples for r in reports):
            raise EngineStateError("merged partial sum does not match its reports (count or total samples differ)")
        accumulator.merge(partial)
        for report in reports:
            self._note_accepted(report, None)

    def submit_secure_sum(self, reports: Sequence[UpdateReport], delta_sum: Weights) -> None:
        """Accept the unmasked sum ``Σ Δ_k`` (each weighted 1) of the clients ``reports`` describe:
        secure aggregation into an aggregator that takes such sums (DP in client/local mode)."""
        accumulator = self._merge_target("accept a secure sum", reports)
        if not isinstance(accumulator, TakesSecureSum):
            raise EngineStateError(f"strategy {self.strategy.name!r} cannot take a secure sum of updates")
        accumulator.add_secure_sum(delta_sum, [r.client_id for r in reports])
        for report in reports:
            self._note_accepted(report, None)

    def _merge_target(self, action: str, reports: Sequence[UpdateReport]) -> Accumulator:
        """The open round's accumulator, after checking the identity of every report to fold in."""
        self._require(EngineState.COLLECTING, action)
        assert self._open is not None
        seen: set[str] = set()
        for report in reports:
            problem = self._check_identity(report.client_id, report.round, report.num_samples)
            if problem or report.client_id in seen:
                raise EngineStateError(f"merged update of client {report.client_id!r} is invalid: {problem}")
            seen.add(report.client_id)
        return self._open.accumulator

    def _note_accepted(self, report: UpdateReport, weights: Weights | None) -> None:
        assert self._open is not None
        self._open.received[report.client_id] = report.num_samples
        add_client_metrics(self._open.metric_sums, report.metrics, report.num_samples)
        if self.recorder:
            self.recorder.update_accepted(report, weights)

    def reject_client(self, client_id: str, code: str, reason: str) -> None:
        """Record that a selected client produced no usable update (e.g. its trainer crashed)."""
        self._require(EngineState.COLLECTING, "reject a client")
        assert self._open is not None
        self._reject(self._open.task.round, client_id, code, reason)

    def received(self) -> int:
        """Accepted updates in the open round."""
        return len(self._open.received) if self._open else 0

    def received_from(self) -> tuple[str, ...]:
        """The clients with an accepted update in the open round (empty when none is open).

        The deployment aggregator uses it to tell a selected agent whether to train or wait.
        """
        return tuple(self._open.received) if self._open else ()

    def all_received(self) -> bool:
        """True once every selected client has an accepted update."""
        return self._open is not None and len(self._open.received) == len(self._open.task.selected)

    def criteria_met(self) -> bool:
        """True once the strategy's criteria allow aggregation."""
        if self._open is None:
            return False
        return len(self._open.received) >= self.strategy.criteria.required(len(self._open.task.selected))

    def close_round(self, min_updates: int | None = None) -> RoundOutcome:
        """Aggregate the accepted updates into the new global model and advance.

        The strategy's criteria must hold, unless a close policy decided and passes its own
        ``min_updates`` (the lifecycle closes at a deadline with fewer than the threshold)."""
        self._require(EngineState.COLLECTING, "close a round")
        assert self._open is not None
        selected = len(self._open.task.selected)
        need = self.strategy.criteria.required(selected) if min_updates is None else max(1, min(selected, min_updates))
        if self.received() < need:
            raise EngineStateError(
                f"round {self._open.task.round} has {self.received()} of the {need} updates it needs"
            )
        outcome = self._aggregate(self._open)
        measured = self._open.accumulator
        ends_run = isinstance(measured, ReportsRoundMetrics) and measured.ends_run
        if self.strategy.server_opt is not None and self._opt_state is not None:
            stepped, self._opt_state = self.strategy.server_opt.step(self._global, outcome.weights, self._opt_state)
            validate_weights(stepped, self._global)
            outcome = replace(outcome, weights=stepped, server_opt_state=self._opt_state)
        if self.strategy.personal_keys:  # never aggregated: the global values stay as they were
            kept = {k: v if self.strategy.shared(k) else self._global[k] for k, v in outcome.weights.items()}
            outcome = replace(outcome, weights=kept)
        if self.synthesis is not None:  # a federation's cluster: the aggregate is mixed with the peers' models
            outcome = self.synthesis.synthesise(outcome)
            validate_weights(outcome.weights, self._global)
        self._global = _frozen(outcome.weights)
        self._open = None
        self._next_round = outcome.round + 1
        self._finished = ends_run or (self.max_rounds is not None and self._next_round > self.max_rounds)
        if self.recorder:
            self.recorder.round_closed(outcome)
        return outcome

    def abandon_round(self) -> int:
        """Close the open round without a model (its deadline passed); the next round starts
        from the same global model. Returns the abandoned round's number."""
        self._require(EngineState.COLLECTING, "abandon a round")
        assert self._open is not None
        number, received = self._open.task.round, self._open.received
        self._open = None
        self._next_round = number + 1
        self._finished = self.max_rounds is not None and self._next_round > self.max_rounds
        if self.recorder:
            self.recorder.round_abandoned(number, len(received), int(sum(received.values())))
        return number

    def _aggregate(self, open_round: _OpenRound) -> RoundOutcome:
        weights = open_round.accumulator.result()
        validate_weights(weights, self._global)
        total = sum(open_round.received.values())
        metrics = round_client_metrics(open_round.metric_sums, total)
        if isinstance(open_round.accumulator, ReportsRoundMetrics):  # e.g. DP's ε, measured by the aggregator
            metrics.update(open_round.accumulator.round_metrics())
        missing = tuple(c for c in open_round.task.selected if c not in open_round.received)
        return RoundOutcome(
            round=open_round.task.round,
            weights=weights,
            num_updates=len(open_round.received),
            num_samples=int(total),
            client_metrics=metrics,
            missing=missing,
            num_rejected=open_round.rejected,
            seconds=time.perf_counter() - open_round.started,
        )
