"""FedCurv (Shoham et al. 2019, "Overcoming Forgetting in Federated Learning on Non-IID Data").

Each client adds an EWC-style penalty that keeps it close to the other clients'
important weights: ``λ Σ_{j≠i} Σ_k F_j,k (θ_k − θ_j,k)²``, with ``F_j`` client j's
diagonal Fisher information. Expanding the square, a client needs only two sums over the
others: ``Σ F_j`` and ``Σ F_j ⊙ θ_j``. The server keeps those sums of the last round's
participants inside the global model as reserved tensors (``fedloom.fedcurv.u/<name>``,
``fedloom.fedcurv.v/<name>``); each client subtracts its own last contribution (kept
locally) and returns its new ``F_i`` and ``F_i ⊙ θ_i`` in the same slots. The model
itself is the sample-weighted mean, as in FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like, float64
from fedloom.algorithms.mean import WeightedMeanAccumulator, require_finite
from fedloom.core.errors import ValidationError
from fedloom.core.reserved import FISHER_SUM_PREFIX, WEIGHTED_SUM_PREFIX, model_part, with_zeros
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible


def with_curvature(weights: Mapping[str, np.ndarray]) -> Weights:
    """``weights`` plus zero Fisher sums for every floating-point tensor (if not there yet)."""
    return with_zeros(weights, FISHER_SUM_PREFIX, WEIGHTED_SUM_PREFIX)


class FedCurvAccumulator:
    """Weighted mean of the models; plain sums of the clients' Fisher tensors."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._reference = dict(reference)
        self._models = WeightedMeanAccumulator(model_part(reference))
        self._sums = {
            k: np.zeros(v.shape, np.float64) for k, v in reference.items() if k.startswith("fedloom.fedcurv.")
        }
        if not self._sums:
            raise ValidationError("the global model has no FedCurv sums; build it with with_curvature()")
        self.count = 0

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            sums = {name: float64(total + update.weights[name]) for name, total in self._sums.items()}
        require_finite(sums, "FedCurv")  # the Fisher sums are true sums: refuse one that would overflow
        self._models.add_weights(model_part(update.weights), float(update.num_samples))
        self._sums = sums
        self.count += 1

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        out = self._models.result()
        out.update({k: cast_like(v, self._reference[k]) for k, v in self._sums.items()})
        return out


@dataclass(frozen=True)
class FedCurv:
    """FedCurv's aggregator; the penalty weight λ (``curvature_lambda``) is sent to the clients."""

    curvature_lambda: float = 1.0
    name: str = "fedcurv"
    mergeable: bool = False
    client_state: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def client_extra(self) -> dict[str, Any]:
        """What every client's FitConfig.extra needs for this aggregator."""
        return {"curvature_lambda": self.curvature_lambda}

    def initial(self, weights: Mapping[str, np.ndarray]) -> Weights:
        return with_curvature(weights)

    def start(self, reference: Mapping[str, np.ndarray]) -> FedCurvAccumulator:
        return FedCurvAccumulator(reference)
