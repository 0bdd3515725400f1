"""Judging a simulated round: its global model evaluated centrally and on clients' own data.

Safe to run in another thread while the next round trains (it reads only the trained
round's outcome), which is how ``Evaluation(overlap=True)`` works.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fedloom.algorithms.strategy import Strategy
from fedloom.client.client_state import personal_store
from fedloom.client.personal import PersonalStore
from fedloom.core.observe import RoundSummary
from fedloom.core.reserved import model_part
from fedloom.core.weights import Weights
from fedloom.server.rounds import RoundClosed
from fedloom.sim.client_eval import ClientEvaluation, PerClient
from fedloom.sim.executor import ClientFn
from fedloom.sim.options import Evaluation
from fedloom.sim.sync_loop import TrainedRound


class RoundJudge:
    """Turns a trained round into its :class:`RoundSummary` with every metric measured."""

    def __init__(
        self,
        strategy: Strategy,
        seed: int,
        client_fn: ClientFn,
        num_clients: int,
        evaluation: Evaluation,
        state_dir: str | None,
    ) -> None:
        self.strategy, self.seed, self.client_fn, self.num_clients = strategy, seed, client_fn, num_clients
        self.evaluation, self.state_dir = evaluation, state_dir

    def summarize(self, trained: TrainedRound) -> RoundSummary:
        """An abandoned round made no model: its summary evaluates the unchanged one and says
        ``abandoned = 1``."""
        end = trained.end
        per_client: PerClient = {}
        if isinstance(end, RoundClosed):
            outcome = end.outcome
            number, updates, samples, weights = outcome.round, outcome.num_updates, outcome.num_samples, outcome.weights
            metrics = self._metrics(outcome.client_metrics, weights, number, per_client)
        else:
            number, updates, samples, weights = end.round, end.num_updates, 0, trained.start_weights
            metrics = {**self._metrics({}, weights, number, per_client), "abandoned": 1.0}
        metrics.update(trained.executor_metrics)
        if trained.sim_seconds is not None:
            metrics["sim_seconds"] = trained.sim_seconds
        return RoundSummary(
            round=number,
            num_selected=trained.num_selected,
            num_updates=updates,
            num_samples=samples,
            metrics=metrics,
            seconds=time.perf_counter() - trained.started,
            per_client=per_client,
            system=trained.system,
        )

    def _personal(self) -> tuple[tuple[str, ...], PersonalStore] | None:
        keys = self.strategy.personal_keys
        return (keys, personal_store(self.state_dir)) if keys and self.state_dir else None

    def _metrics(
        self, client_metrics: Mapping[str, float], weights: Weights, round_no: int, per_client: PerClient
    ) -> dict[str, float]:
        metrics = dict(client_metrics)
        evaluation = self.evaluation
        if evaluation.central is not None:
            metrics.update({k: float(v) for k, v in evaluation.central(model_part(weights)).items()})
        if evaluation.client_fraction > 0:
            on_clients = ClientEvaluation(
                evaluation.client_fraction,
                self.strategy.client,
                self.seed,
                evaluation.finetune_epochs,
                self._personal(),
            )
            averages, measured = on_clients.run(self.client_fn, model_part(weights), self.num_clients, round_no)
            metrics.update(averages)
            per_client.update(measured)
        return metrics
