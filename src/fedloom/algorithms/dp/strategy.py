"""Turning a plain strategy into its DP version, refusing what would not be private.

:func:`with_privacy` swaps the aggregator for :class:`~fedloom.algorithms.dp.central.PrivateMean`
and, in client/local modes, names the DP client part on the wire. What it refuses, and why:

- an aggregator other than the (sample-weighted) mean: the DP mean replaces it with a
  uniform-weight sum of clipped updates; FedNova, q-FedAvg and sample-count weights let one
  client's influence grow with what it reports, and robust rules (median, Krum, ...) have
  no sensitivity we can state for the Gaussian mechanism;
- strategies with server state inside the model (SCAFFOLD, FedCurv, FedDyn): their reserved
  tensors are client-data statistics released without noise;
- an ``update_filter``: its refusals are decided on raw updates and recorded with reasons
  computed from them, a release outside the noise;
- personal keys (not yet: their tensors would take clip budget without being released);
- a δ of at least 1/K and a ``target_epsilon`` that even one round would exceed.

A server optimiser (FedAvgM, FedAdam, ...) is allowed: it only post-processes the noised
aggregate. Asynchronous rounds are refused by the callers (``simulate``, the aggregator):
FedBuff's arrivals are not a uniform draw without replacement, which is what is accounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fedloom.algorithms.dp.central import PrivateMean
from fedloom.algorithms.dp.client import DP_CLIP, DP_MODE, DP_NOISE, DP_NOISE_SEED, DP_SHARES, DpClient
from fedloom.algorithms.dp.ledger import PrivacyLedger
from fedloom.algorithms.dp.settings import PrivacySettings
from fedloom.algorithms.strategy import ClientSettings, Strategy, WeightedMean
from fedloom.algorithms.units import CLIENT_PARTS_KEY, HasClientPart, SeedsInitialModel
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig


def refuse_unprivate(strategy: Strategy) -> None:
    """Raise ConfigError naming the part of ``strategy`` DP cannot bound, and what to use instead."""
    aggregator = strategy.aggregator
    if isinstance(aggregator, (SeedsInitialModel, HasClientPart)):
        raise ConfigError(
            f"differential privacy cannot be combined with aggregator {aggregator.name!r}: it keeps client "
            "statistics in the model's reserved tensors, released without noise; use strategy fedavg "
            "(a server optimiser such as fedadam is fine)"
        )
    if not isinstance(aggregator, WeightedMean):
        raise ConfigError(
            f"differential privacy cannot be combined with aggregator {aggregator.name!r}: one client's "
            "influence on it is not bounded by the clip norm (sample-count or loss weights, or a robust "
            "rule with no stated sensitivity); use aggregator 'mean', which DP replaces by the clipped "
            "uniform mean"
        )
    if strategy.update_filter is not None:
        raise ConfigError(
            "differential privacy cannot be combined with an update filter (filter_max_distance / "
            "filter_min_cosine): its refusals are decided on raw updates and recorded with their values, "
            "outside the noise; remove the filter (clipping already bounds every update)"
        )
    if strategy.personal_keys:
        raise ConfigError("differential privacy with personal_keys is not supported yet: remove personal_keys")


def with_privacy(strategy: Strategy, settings: PrivacySettings, num_clients: int) -> Strategy:
    """``strategy`` made private for a federation of ``num_clients`` clients (see the module docstring)."""
    refuse_unprivate(strategy)
    settings.check_population(num_clients)
    selected = strategy.sampler.num_to_sample(num_clients)
    settings = settings.for_round_size(selected)
    ledger = PrivacyLedger(settings)
    first = ledger.epsilon_after_next(num_clients, selected)  # also: can this accountant account for it?
    target = settings.target_epsilon
    if target is not None and first > target:
        raise ConfigError(
            f"privacy target_epsilon={target} cannot be met even for one round (one round spends ε={first:.4g} "
            f"with {selected} of {num_clients} clients): raise noise_multiplier or target_epsilon, or sample fewer"
        )
    extra = dict(strategy.client.extra)
    if settings.mode != "central":
        extra[CLIENT_PARTS_KEY] = [*extra.get(CLIENT_PARTS_KEY, []), DpClient().name]
        extra.update({DP_MODE: settings.mode, DP_NOISE: settings.noise_multiplier, DP_CLIP: settings.clip_norm})
        if settings.noise_seed is not None:
            extra[DP_NOISE_SEED] = settings.noise_seed
    client = strategy.client
    return replace(
        strategy,
        aggregator=PrivateMean(settings, strategy.sampler, ledger),
        client=PrivateClientSettings(client.epochs, client.batch_size, client.lr, extra, ledger=ledger),
    )


@dataclass(frozen=True)
class PrivateClientSettings(ClientSettings):
    """The client settings of a DP strategy: in client mode each fit config also carries the round's
    number of noise shares m (``dp_noise_shares``), the number of clients the round selected, which
    only the open round knows (a deployment's federation grows as agents join)."""

    ledger: PrivacyLedger | None = field(default=None, compare=False, repr=False)

    def fit_config(self, round: int, client_id: str, seed: int) -> FitConfig:
        config = super().fit_config(round, client_id, seed)
        if self.ledger is None or self.ledger.settings.mode != "client":
            return config
        return replace(config, extra={**config.extra, DP_SHARES: self.ledger.round_size})
