"""The hand-over between an edge aggregator's two sides: its upstream agent and its downstream rounds.

An edge aggregator is an agent upstream and an aggregator downstream (docs/deployment.md,
"Edge aggregators"). Upstream, a normal :class:`fedloom.client.agent.Agent` trains with
:class:`EdgeTrainer`, whose "training" is one downstream round: it :meth:`EdgeRelay.offer`\\ s
the top's global model G (and the round's config) and waits for the aggregate of a
downstream round that started from G. Downstream, :class:`~fedloom.server.edge_rounds.RelayRounds`
serves G to the edge's own agents, :meth:`EdgeRelay.publish`\\ es the round's sample-weighted
mean and sample total once its close policy allows, and closes the round only when the
top has moved on, with the top's next model as the round's global model. So every
downstream global model is a model of the top, and the one update the edge sends per
round is the weighted mean of its leaves with their sample total: the top's weighted
mean over edges is the flat weighted mean over all leaves.

Everything here is thread-safe (one condition variable) and holds no lock while calling
out, so the aggregator's lock and the relay's never nest the wrong way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedloom.algorithms.units import CLIENT_PARTS_KEY
from fedloom.core.errors import ClientError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.serialization import content_hash
from fedloom.core.terms import NO_TERMS, ClientTerms
from fedloom.core.weights import Weights

__all__ = ["Aggregate", "EdgeRelay", "EdgeTrainer", "RelayClosedError", "check_upstream_task"]

#: client parts of the top's strategy an edge can forward to its leaves (their aggregation is a mean)
FORWARDED_PARTS = frozenset({"fedprox"})
#: how many upstream configs are remembered (a round still collecting may start from an older model)
_KEPT_CONFIGS = 4


class RelayClosedError(ClientError):
    """The edge is stopping: the downstream round the upstream agent waits for will not come."""


@dataclass(frozen=True)
class Aggregate:
    """One downstream round's result, as the upstream upload carries it."""

    base_sha256: str  # the global model the round started from (the top's)
    round: int  # the downstream round's number
    weights: Weights  # the sample-weighted mean of the accepted updates
    num_samples: int  # their sample total
    metrics: Mapping[str, float] = field(default_factory=dict)  # sample-weighted means of their metrics


class EdgeRelay:
    """The mailbox between the upstream agent's thread and the downstream lifecycle."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._base: tuple[Weights, str] | None = None
        self._configs: dict[str, FitConfig] = {}
        self._published: Aggregate | None = None
        self._final: Weights | None = None
        self.finished = False
        self.closed = False

    # ---------------------------------------------------------------- upstream side

    def offer(self, weights: Weights, config: FitConfig) -> str:
        """The top's model for the next downstream round, with its round's config; returns its hash."""
        sha = content_hash(weights)
        with self._changed:
            self._base = (weights, sha)
            self._configs[sha] = config
            while len(self._configs) > _KEPT_CONFIGS:
                self._configs.pop(next(iter(self._configs)))
            self._changed.notify_all()
        return sha

    def finish(self, final: Weights | None) -> None:
        """The top's run is over; ``final`` (its last global model) closes the round held open."""
        with self._changed:
            self.finished, self._final = True, final
            self._changed.notify_all()

    def close(self) -> None:
        """The edge is stopping: release a waiting upstream agent (it raises :class:`RelayClosedError`)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_aggregate(self, base_sha256: str, timeout: float | None = None) -> Aggregate:
        """The aggregate of a downstream round that started from ``base_sha256`` (blocks until there is one)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._published
                if found is not None and found.base_sha256 == base_sha256:
                    return found
                if self.closed:
                    raise RelayClosedError("the edge aggregator is stopping; the round is trained again on restart")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no downstream round from model {base_sha256[:12]} closed in time")
                self._changed.wait(0.5 if left is None else min(left, 0.5))

    # ---------------------------------------------------------------- downstream side

    def publish(self, aggregate: Aggregate) -> None:
        with self._changed:
            self._published = aggregate
            self._changed.notify_all()

    def next_global(self, current_sha256: str) -> Weights | None:
        """The model that ends a round started from ``current_sha256``: the top's newer one (or its
        final one), or None while the top has not moved on."""
        with self._changed:
            if self._base is not None and self._base[1] != current_sha256:
                return self._base[0]
            return self._final if self.finished else None

    def config_for(self, base_sha256: str) -> FitConfig | None:
        """The top's config of the round whose model hashes to ``base_sha256`` (None: not offered yet)."""
        with self._changed:
            return self._configs.get(base_sha256)


class EdgeTrainer:
    """The upstream agent's Trainer: one downstream round per call of :meth:`fit`.

    ``set_initial`` records the top's first model as the downstream run's global model 0
    (a no-op once there is one); ``tick`` makes the downstream lifecycle look at once.
    """

    def __init__(
        self,
        relay: EdgeRelay,
        set_initial: Callable[[Weights], object],
        tick: Callable[[], None],
        round_timeout: float | None = None,
    ) -> None:
        self.relay, self._set_initial, self._tick, self.round_timeout = relay, set_initial, tick, round_timeout
        self._held: Weights = {}

    def get_weights(self) -> Weights:
        """The last model from upstream (an edge never uploads an initial model of its own)."""
        return dict(self._held)

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """Run one downstream round from the top's ``weights``; its weighted mean and sample total."""
        check_upstream_task(config.extra, terms)  # FedProx's term is the leaves' to apply: they get the same extra
        self._held = dict(weights)
        self._set_initial(weights)
        sha = self.relay.offer(weights, config)
        self._tick()
        found = self.relay.wait_aggregate(sha, self.round_timeout)
        return FitResult(dict(found.weights), found.num_samples, dict(found.metrics))

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        """An edge holds no data of its own: its leaves evaluate."""
        return {}


def check_upstream_task(extra: Mapping[str, Any], terms: ClientTerms) -> None:
    """Refuse (ClientError naming them) what the top asks that an edge cannot forward to its leaves."""
    parts = set(extra.get(CLIENT_PARTS_KEY) or ())
    unsupported = sorted(parts - FORWARDED_PARTS)
    if unsupported or terms.report_fisher or terms.report_initial_loss:
        named = ", ".join(unsupported) or "per-client losses or Fisher information"
        raise ClientError(
            f"the top aggregator's strategy needs {named} from each client, which an edge cannot give"
            " (its update is a mean of its leaves): run the top with fedavg, fedprox or a server"
            " optimiser, or connect these leaves to the top directly"
        )
