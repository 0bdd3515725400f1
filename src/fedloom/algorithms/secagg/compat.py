"""Which strategies secure aggregation can run: only those that need just the sum of updates.

The server sees ``Σ n_k · update_k`` and ``Σ n_k``, never an update on its own. The
weighted-mean family (FedAvg, FedProx, and a server optimiser stepping on their mean)
needs nothing else; nor does DP in client or local mode (``SumsSecurely``), whose clients
clipped and noised their own updates and enter the sum with weight 1. Robust rules look
at each update (a median, a distance, a score), FedNova and q-FedAvg weight each one by
what it reports, SCAFFOLD, FedDyn and FedCurv aggregate reserved per-client tensors with
their own rules, and an update filter judges each update: all of those are refused, with
the reason, before a round starts. So are compressed updates: masking expands them again.
"""

from __future__ import annotations

from fedloom.algorithms.strategy import Strategy, WeightedMean
from fedloom.algorithms.units import SumsSecurely
from fedloom.core.compression import EXTRA_KEY as COMPRESSION_KEY
from fedloom.core.errors import ConfigError


def check_secure_compatible(strategy: Strategy) -> None:
    """Raise ConfigError saying why ``strategy`` cannot run under secure aggregation."""
    aggregator = strategy.aggregator
    if isinstance(aggregator, SumsSecurely) and not aggregator.takes_secure_sum:
        raise ConfigError(
            "central differential privacy clips each update on the server, and secure aggregation shows the"
            ' server only their sum: use client-side DP (--dp client / dp_mode = "client": each client clips'
            " its update and adds its share of the noise), which composes with secure aggregation"
        )
    if not isinstance(aggregator, WeightedMean) and not isinstance(aggregator, SumsSecurely):
        name = getattr(aggregator, "name", type(aggregator).__name__)
        raise ConfigError(
            f"secure aggregation shows the server only the sum of the updates; aggregator {name!r} needs each"
            " update (or per-client values) on its own, so it cannot combine with --secagg: use fedavg, fedprox"
            " or a server optimiser (fedavgm, fedadam, fedadagrad, fedyogi) on the weighted mean"
        )
    if COMPRESSION_KEY in strategy.client.extra:
        raise ConfigError(
            "secure aggregation masks every update as whole words of Z_2^64, so a compressed update"
            " would be expanded again before it is sent: turn compression off (--compression none /"
            " [client] compression = 'none')"
        )
    if strategy.update_filter is not None:
        raise ConfigError(
            "secure aggregation shows the server only the sum of the updates; an update filter"
            " (filter_max_distance / filter_min_cosine) needs each update to judge it: remove the filter"
        )


def uniform_weights(strategy: Strategy) -> bool:
    """Whether ``strategy``'s clients enter the secure sum with weight 1 (its aggregator takes a
    secure sum itself: DP in client/local mode) rather than with their sample counts."""
    aggregator = strategy.aggregator
    return isinstance(aggregator, SumsSecurely) and aggregator.takes_secure_sum
