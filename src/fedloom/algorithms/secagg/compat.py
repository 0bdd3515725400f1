"""Which strategies secure aggregation can run: only those that need just the sum of updates.

The server sees ``Σ n_k · update_k`` and ``Σ n_k``, never an update on its own. The
weighted-mean family (FedAvg, FedProx, and a server optimiser stepping on their mean)
needs nothing else. Robust rules look at each update (a median, a distance, a score),
FedNova and q-FedAvg weight each one by what it reports, SCAFFOLD, FedDyn and FedCurv
aggregate reserved per-client tensors with their own rules, and an update filter
judges each update: all of those are refused, with the reason, before a round starts.
"""

from __future__ import annotations

from fedloom.algorithms.strategy import Strategy, WeightedMean
from fedloom.core.errors import ConfigError


def check_secure_compatible(strategy: Strategy) -> None:
    """Raise ConfigError saying why ``strategy`` cannot run under secure aggregation."""
    aggregator = strategy.aggregator
    if not isinstance(aggregator, WeightedMean):
        name = getattr(aggregator, "name", type(aggregator).__name__)
        raise ConfigError(
            f"secure aggregation shows the server only the sum of the updates; aggregator {name!r} needs each"
            " update (or per-client values) on its own, so it cannot combine with --secagg: use fedavg, fedprox"
            " or a server optimiser (fedavgm, fedadam, fedadagrad, fedyogi) on the weighted mean"
        )
    if strategy.update_filter is not None:
        raise ConfigError(
            "secure aggregation shows the server only the sum of the updates; an update filter"
            " (filter_max_distance / filter_min_cosine) needs each update to judge it: remove the filter"
        )
