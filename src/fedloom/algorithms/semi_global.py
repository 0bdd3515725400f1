"""The semi-global model of one cluster in a federation of several aggregators.

Each aggregator ``i`` of a federation aggregates only its own agents' updates into its
*cluster model* ``C_i(r)`` of ``n_i(r)`` samples. Its *semi-global model* mixes in the
other clusters' newest models, weighted by their samples::

    S_i(r) = (n_i C_i(r) + Σ_j n_j C_j(r_j)) / (n_i + Σ_j n_j)

over the peers ``j`` whose newest recorded round ``r_j`` is ``<= r`` and at most
``max_staleness_rounds`` behind (``r - r_j <= max_staleness_rounds``); a peer with no such
model (not started yet, gone, or too far behind) is left out, so with no fresh peer
``S_i(r) = C_i(r)``. ``S_i(r)`` is the model that starts cluster ``i``'s round ``r + 1``.

The mean is :class:`~fedloom.algorithms.mean.WeightedMeanAccumulator`'s, the one FedAvg
uses: float64 convex steps (finite inputs cannot overflow), integer tensors such as
BatchNorm's ``num_batches_tracked`` averaged and rounded back, 0-d tensors kept 0-d, and
every tensor cast back to the cluster model's dtype. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.core.errors import ValidationError
from fedloom.core.weights import Weights, check_compatible


@dataclass(frozen=True)
class ClusterModel:
    """One cluster's model of a round and the samples its round aggregated."""

    cluster: str
    round: int
    num_samples: int
    weights: Weights


def fresh_peers(
    own_cluster: str, round: int, candidates: Sequence[ClusterModel], max_staleness_rounds: int
) -> list[ClusterModel]:
    """The peers' models that take part in ``own_cluster``'s semi-global model of ``round``.

    ``candidates`` are each cluster's newest recorded model; kept are the other clusters'
    models of a round ``r_j <= round`` with ``round - r_j <= max_staleness_rounds``, one per
    cluster, in cluster order. A second model of the same cluster is a caller's bug.
    """
    if max_staleness_rounds < 0:
        raise ValidationError(f"max_staleness_rounds must be >= 0, got {max_staleness_rounds}")
    seen: set[str] = set()
    kept = []
    for model in sorted(candidates, key=lambda m: m.cluster):
        if model.cluster in seen:
            raise ValidationError(f"cluster {model.cluster!r} is given twice; give each cluster's newest model once")
        seen.add(model.cluster)
        if model.cluster != own_cluster and 0 <= round - model.round <= max_staleness_rounds:
            kept.append(model)
    return kept


def semi_global(own: ClusterModel, peers: Sequence[ClusterModel]) -> Weights:
    """``(n_own C_own + Σ n_j C_j) / (n_own + Σ n_j)``, in the own cluster model's dtypes and shapes.

    Every peer model must have the own model's tensor names, shapes and dtypes (the
    error names the cluster and the tensor) and at least one sample.
    """
    accumulator = WeightedMeanAccumulator(own.weights)
    for model in (own, *peers):
        if model.num_samples < 1:
            raise ValidationError(f"cluster {model.cluster!r} round {model.round}: num_samples must be >= 1")
        try:
            check_compatible(model.weights, own.weights)
        except ValidationError as exc:
            raise ValidationError(f"cluster {model.cluster!r} round {model.round}: {exc}") from None
        accumulator.add_weights(model.weights, float(model.num_samples))
    return accumulator.result()
