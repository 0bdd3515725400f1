"""FedCurv (Shoham et al. 2019, "Overcoming Forgetting in Federated Learning on Non-IID Data").

Each client adds an EWC-style penalty that keeps it close to the other clients'
important weights: ``λ Σ_{j≠i} Σ_k F_j,k (θ_k − θ_j,k)²``, with ``F_j`` client j's
diagonal Fisher information. Expanding the square, a client needs only two sums over the
others: ``Σ F_j`` and ``Σ F_j ⊙ θ_j``. The server keeps those sums of the last round's
participants inside the global model as reserved tensors (``fedloom.fedcurv.u/<name>``,
``fedloom.fedcurv.v/<name>``); each client subtracts its own last contribution (kept
locally) and returns its new ``F_i`` and ``F_i ⊙ θ_i`` in the same slots. The model
itself is the sample-weighted mean, as in FedAvg. The client part (:class:`FedCurvClient`)
turns the sums into the penalty's gradient ``2λ(aθ − b)`` for the trainer and asks it for
the diagonal Fisher at the trained weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like, float64
from fedloom.algorithms.mean import WeightedMeanAccumulator, require_finite
from fedloom.algorithms.units import ClientOutcome, ClientRound
from fedloom.core.errors import ClientError, ConfigError, ValidationError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.reserved import model_part, with_prefix, with_zeros
from fedloom.core.terms import FISHER_PREFIX, AffineTerm, ClientTerms
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible

#: the reserved slots of Σ F_j and Σ F_j ⊙ θ_j of model tensor ``<name>``: prefix + ``<name>``
FISHER_SUM_PREFIX = "fedloom.fedcurv.u/"
WEIGHTED_SUM_PREFIX = "fedloom.fedcurv.v/"
#: the wire key of the penalty weight λ
CURVATURE_LAMBDA = "curvature_lambda"


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

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def client_extra(self) -> dict[str, Any]:
        """What every client's FitConfig.extra needs for this aggregator."""
        return {"curvature_lambda": self.curvature_lambda}

    def initial(self, weights: Mapping[str, np.ndarray]) -> Weights:
        return with_curvature(weights)

    def client_part(self) -> FedCurvClient:
        return FedCurvClient()

    def start(self, reference: Mapping[str, np.ndarray]) -> FedCurvAccumulator:
        return FedCurvAccumulator(reference)


def curvature_sums(weights: Mapping[str, np.ndarray]) -> tuple[Weights, Weights]:
    """FedCurv's (Σ F, Σ F ⊙ θ) in the reserved slots, keyed by model tensor name."""
    return with_prefix(weights, FISHER_SUM_PREFIX), with_prefix(weights, WEIGHTED_SUM_PREFIX)


def _curvature_lambda(config: FitConfig) -> float:
    weight = config.extra.get(CURVATURE_LAMBDA, 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
        raise ConfigError(f"{CURVATURE_LAMBDA} must be a number >= 0, got {weight!r} (set --curvature-lambda)")
    return float(weight)


def others_sums(step: ClientRound) -> tuple[Weights, Weights]:
    """(a, b): the sums without this client's own last share when the sums hold it (it took part
    in the previous round), in float64 arrays."""
    total_f, total_fw = curvature_sums(step.reserved)
    mine = step.kept
    own = bool(mine) and int(mine["round"][0]) == step.config.round - 1
    a = {k: np.asarray(v, np.float64) - (mine[f"u/{k}"] if own else 0.0) for k, v in total_f.items()}
    b = {k: np.asarray(v, np.float64) - (mine[f"v/{k}"] if own else 0.0) for k, v in total_fw.items()}
    return {k: np.asarray(v) for k, v in a.items()}, {k: np.asarray(v) for k, v in b.items()}


@dataclass(frozen=True)
class FedCurvClient:
    """FedCurv's client part: the penalty ``λ Σ (aθ² − 2bθ)`` and this client's Fisher share."""

    name: str = "fedcurv"
    keeps_state: bool = True

    def terms(self, step: ClientRound) -> ClientTerms:
        """The gradient ``2λ(aθ − b)`` as ``scale = 2λa``, ``offset = −2λb``; the Fisher is asked for."""
        a, b = others_sums(step)
        weight = _curvature_lambda(step.config)
        terms = {k: AffineTerm(np.asarray(2.0 * weight * a[k]), np.asarray(-2.0 * weight * b[k])) for k in a}
        return ClientTerms(terms, report_fisher=True)

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        """``F_i`` and ``F_i ⊙ θ_i`` go back in the slots and are kept to be subtracted next round."""
        total_f, total_fw = curvature_sums(step.reserved)
        fisher = with_prefix(trained.weights, FISHER_PREFIX)
        if not fisher:
            raise ClientError("FedCurv needs Trainer.fit to return the diagonal Fisher when asked (report_fisher)")
        model = model_part(trained.weights)
        u = {k: np.asarray(fisher.get(k, np.zeros_like(v)), np.float64) for k, v in total_f.items()}
        v = {k: np.asarray(u[k] * np.asarray(model[k], np.float64)) for k in total_f}
        kept = {**{f"u/{k}": x for k, x in u.items()}, **{f"v/{k}": x for k, x in v.items()}}
        sent = {FISHER_SUM_PREFIX + k: np.asarray(u[k], total_f[k].dtype) for k in total_f}
        sent |= {WEIGHTED_SUM_PREFIX + k: np.asarray(v[k], total_fw[k].dtype) for k in total_fw}
        return ClientOutcome(sent, {**kept, "round": np.array([step.config.round], np.int64)})
