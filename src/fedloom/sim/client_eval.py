"""Client-side evaluation: the global, personalised and fine-tuned model on clients' own data.

Personalisation is judged per client: how well does the shared model do on *my* data,
and how much do my personal tensors (FedPer/FedBN) or a few local fine-tuning epochs
add? Each evaluated client reports ``client_*`` (the global model),
``client_personal_*`` (with its personal tensors) and ``client_finetuned_*`` (after
``finetune_epochs`` local epochs from the better of those), on its local held-out data
when the task has it (``local_test_fraction`` in the built-in tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedloom.algorithms.strategy import ClientSettings
from fedloom.client.personal import PersonalStore, with_personal
from fedloom.client.trainer import Trainer
from fedloom.core.fit import EvalConfig, FitConfig
from fedloom.core.rng import rng_for, stream_key
from fedloom.core.weights import Weights

PerClient = dict[str, dict[str, float]]


@dataclass(frozen=True)
class ClientEvaluation:
    """Which clients to evaluate each round (a seeded ``fraction``) and how."""

    fraction: float
    client: ClientSettings
    seed: int
    finetune_epochs: int = 0
    personal: tuple[tuple[str, ...], PersonalStore] | None = None

    def run(
        self, client_fn: Callable[[int], Trainer], weights: Weights, num_clients: int, round_no: int
    ) -> tuple[dict[str, float], PerClient]:
        """Sample-weighted means over the evaluated clients, and each client's own values.

        A metric's mean is over the clients that report it: ``auc`` is left out where a client's
        local data holds one class, and must not be averaged as if those clients scored 0."""
        count = min(num_clients, max(1, round(self.fraction * num_clients)))
        rng = rng_for(self.seed, "client-eval", round_no)
        chosen = sorted(rng.choice(num_clients, size=count, replace=False).tolist())
        totals: dict[str, float] = {}
        samples: dict[str, float] = {}
        per_client: PerClient = {}
        for index in chosen:
            values, n = self._one(client_fn(index), str(index), weights, round_no)
            per_client[str(index)] = values
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value * n
                samples[key] = samples.get(key, 0.0) + n
        return {k: v / samples[k] for k, v in totals.items()}, per_client

    def _one(self, trainer: Trainer, client_id: str, weights: Weights, round_no: int) -> tuple[dict[str, float], float]:
        variants = {"client_": weights}
        if self.personal is not None:
            variants["client_personal_"] = with_personal(weights, client_id, self.personal[0], self.personal[1])
        if self.finetune_epochs > 0:
            start = variants.get("client_personal_", weights)
            config = FitConfig(
                round=round_no,
                epochs=self.finetune_epochs,
                batch_size=self.client.batch_size,
                lr=self.client.lr,
                seed=stream_key(self.seed, "finetune", round_no, client_id) % (2**31),
            )
            variants["client_finetuned_"] = trainer.fit(start, config).weights
        values: dict[str, float] = {}
        n = 1.0
        for prefix, model in variants.items():
            metrics = trainer.evaluate(model, EvalConfig(round=round_no))
            n = float(metrics.get("num_samples", 1.0))
            values.update({prefix + k: float(v) for k, v in metrics.items() if k != "num_samples"})
        return values, n
