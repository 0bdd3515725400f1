"""Which downstream settings an edge aggregator accepts, and its strategy and lifecycle built from them.

An edge forwards one update per round whose weights are its leaves' aggregate and whose
``num_samples`` is their sample total. The top's weighted mean over edges equals flat
FedAvg over the leaves only when that aggregate is the **sample-weighted mean**, so the
edge's ``[strategy]`` must be plain ``fedavg`` (the default). Robust rules (median,
trimmed mean, Krum, ...) give something else — a robust rule per edge, then the top's
rule over edges — and are accepted only when asked for (``allow_non_mean``). Refused
always, naming the field: a server optimiser, an update filter or personal tensors at
the edge (the edge's next model is the top's, so they would silently do nothing), the
algorithms with client state or per-client maths (SCAFFOLD, FedDyn, FedCurv, FedNova,
q-FedAvg), ``[privacy]``, ``[secagg]`` and ``mode = "async"`` (the edge's rounds follow
the top's). What the top runs is the top's choice; an edge refuses, in its upstream
agent, tasks whose client parts it cannot forward
(:func:`fedloom.server.edge_relay.check_upstream_task`).
"""

from __future__ import annotations

from dataclasses import replace

from fedloom.algorithms.registry import AGGREGATORS, STRATEGIES, build_strategy
from fedloom.algorithms.strategy import RoundCriteria, Strategy
from fedloom.core.errors import ConfigError
from fedloom.server.config import AggregatorConfig
from fedloom.server.edge_relay import EdgeRelay
from fedloom.server.edge_rounds import RelayMean, RelayRounds
from fedloom.server.engine import RoundEngine
from fedloom.server.resume import LifecycleFactory
from fedloom.server.rounds import ClosePolicy

__all__ = ["MEAN_STRATEGIES", "ROBUST_AGGREGATORS", "check_edge_config", "edge_lifecycle", "edge_strategy"]

#: downstream strategies whose aggregate makes the top's result flat FedAvg over the leaves
MEAN_STRATEGIES = ("fedavg",)
#: stateless rules an edge may use instead, when asked (the result is then not flat FedAvg)
ROBUST_AGGREGATORS = (
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multikrum",
    "bulyan",
    "norm_bounded",
    "centered_clip",
)


def _where(field: str) -> str:
    return f"(an edge aggregator's [strategy] {field}; see docs/deployment.md, 'Edge aggregators')"


def check_edge_config(config: AggregatorConfig, allow_non_mean: bool = False) -> str:
    """The downstream aggregator's registry name, or a ConfigError naming the field and the fix."""
    chosen = config.strategy
    if config.run.mode != "sync":
        raise ConfigError("[run] mode must be 'sync' for an edge aggregator: its rounds follow the top's")
    if config.secagg.enabled or config.privacy.dp_mode is not None:
        raise ConfigError("[secagg] and [privacy] are refused on an edge aggregator: set them on the top aggregator")
    default_aggregator, default_opt, _terms = STRATEGIES.get(chosen.strategy, (chosen.strategy, None, ()))
    server_opt = chosen.server_opt or default_opt
    if server_opt is not None:
        field = "server_opt" if chosen.server_opt else "strategy"
        raise ConfigError(
            f"{field} = {getattr(chosen, field)!r} (server optimiser {server_opt!r}) is refused {_where(field)}: the"
            " edge's next model is the top's, so an optimiser would do nothing (set it on the top aggregator)"
        )
    extras = [k for k in ("filter_max_distance", "filter_min_cosine", "personal_keys") if getattr(chosen, k)]
    if extras:
        raise ConfigError(f"{', '.join(extras)} are refused {_where(extras[0])}: set them on the top aggregator")
    name = chosen.aggregator or default_aggregator
    if name == "mean" and chosen.strategy in MEAN_STRATEGIES:
        return name
    if name in ROBUST_AGGREGATORS and allow_non_mean:
        return name
    allowed = ", ".join(MEAN_STRATEGIES)
    hint = (
        (
            f"; {', '.join(ROBUST_AGGREGATORS)} are accepted with --allow-non-mean, knowing that the top's result"
            " is then not FedAvg over the leaves"
        )
        if name in ROBUST_AGGREGATORS
        else ""
    )
    raise ConfigError(
        f"strategy {chosen.strategy!r} (aggregator {name!r}) is refused {_where('strategy')}: only a"
        f" sample-weighted mean ({allowed}) makes the top's result flat FedAvg over the leaves{hint}"
    )


def edge_strategy(config: AggregatorConfig, relay: EdgeRelay, *, allow_non_mean: bool = False) -> Strategy:
    """The downstream Strategy: the config's selection and criteria, the relay as its aggregator."""
    inner_name = check_edge_config(config, allow_non_mean)
    rounds, chosen = config.rounds, config.strategy
    params = {k: v for k, v in chosen.params().items() if k in AGGREGATORS[inner_name][0]}
    base = build_strategy(
        "fedavg" if inner_name == "mean" else inner_name,
        fraction=rounds.fraction,
        min_clients=rounds.min_agents,
        criteria=RoundCriteria(threshold=rounds.threshold, min_updates=rounds.min_updates),
        params=params,
    )
    return replace(base, aggregator=RelayMean(relay, base.aggregator))


def edge_lifecycle(relay: EdgeRelay, strategy: Strategy) -> LifecycleFactory:
    """The factory of the downstream rounds (:class:`RelayRounds`) for ``Aggregator(lifecycle=...)``."""
    mean = strategy.aggregator
    if not isinstance(mean, RelayMean):
        raise ConfigError("an edge aggregator's strategy must come from edge_strategy()")

    def build(engine: RoundEngine, policy: ClosePolicy) -> RelayRounds:
        return RelayRounds(engine, policy, relay, mean)

    return build
