"""One aggregator as one cluster of a federation: its round close makes the semi-global model.

When the engine closes round ``r`` of cluster ``i`` (``[federation] cluster``), its
aggregate of the cluster's own agents is the cluster model ``C_i(r)`` of ``n_i(r)``
samples. :class:`SemiGlobalSynthesis` then, through the shared store only:

1. reads each other listed cluster's newest recorded cluster model of a round ``<= r``
   and keeps those at most ``max_staleness_rounds`` behind
   (:func:`~fedloom.algorithms.semi_global.fresh_peers`); a peer model that does not fit
   this cluster's model (other tensors, shapes or dtypes, non-finite values, a blob that
   fails its hash) is left out and recorded in ``rejections`` with code
   :data:`PEER_REFUSED`, naming the cluster, the round and what was wrong;
2. records ``C_i(r)`` with ``n_i(r)`` and the peer models it is about to use, once: if the
   round was recorded already (the aggregator crashed after that write and aggregated the
   round again on restart), the stored cluster model and the stored peer list are used
   instead, so the semi-global model of a round is always the one its record describes;
3. returns the outcome with the semi-global model ``S_i(r)``
   (:func:`~fedloom.algorithms.semi_global.semi_global`), which the recorder stores as the
   run's global model of round ``r`` and round ``r + 1`` starts from.

The cluster model is written before the global model: a crash between the two leaves
the round open, and the restart finishes it from the cluster record.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from fedloom.algorithms.semi_global import ClusterModel, fresh_peers, semi_global
from fedloom.core.errors import ConfigError, FedloomError, IntegrityError
from fedloom.core.federation import ClusterModelRecord, ClusterStore, PeerInput
from fedloom.core.store_protocols import DeploymentStore, RunWriter
from fedloom.core.weights import Weights, validate_weights
from fedloom.server.config import AggregatorConfig
from fedloom.server.federation_config import FederationSection
from fedloom.server.round_types import RoundOutcome

log = logging.getLogger("fedloom.aggregator")

#: the rejection code of a peer's cluster model that was left out of a semi-global model
PEER_REFUSED = "peer_model_refused"


class SemiGlobalSynthesis:
    """The round-close step of one cluster (see the module docstring); ``since`` is when its run began,
    so cluster models of an earlier federation of the same name are never read."""

    def __init__(
        self,
        store: ClusterStore,
        rejections: RunWriter,
        run_id: str,
        federation: str,
        section: FederationSection,
        since: datetime,
    ) -> None:
        assert section.cluster is not None
        self.store, self.rejections = store, rejections
        self.run_id, self.federation, self.since = run_id, federation, since
        self.cluster = section.cluster
        self.clusters = frozenset(section.clusters)
        self.max_staleness_rounds = section.max_staleness_rounds

    def synthesise(self, outcome: RoundOutcome) -> RoundOutcome:
        """The outcome with the semi-global model of ``outcome.round`` (its cluster model recorded first)."""
        number = outcome.round
        recorded = self.store.cluster_model(self.run_id, number)
        if recorded is None:
            loaded = [(r, self._checked(r, outcome.weights, number)) for r in self._fresh_records(number)]
            fresh = [r for r, model in loaded if model is not None]
            used = [model for _, model in loaded if model is not None]
            inputs = [PeerInput(r.cluster, r.round, r.num_samples, r.sha256) for r in fresh]
            recorded = self.store.save_cluster_model(
                self.run_id, self.federation, self.cluster, number, outcome.weights, outcome.num_samples, inputs
            )
        else:  # recorded before a crash: the record decides, never a second look at the peers
            used = [self._recorded_peer(peer) for peer in recorded.peers]
        own = self._loaded(recorded)
        weights = semi_global(own, used)
        total = own.num_samples + sum(p.num_samples for p in used)
        shown = ", ".join(f"{p.cluster}@{p.round} ({p.num_samples})" for p in used) or "none fresh"
        log.info("round %d: semi-global model of %d samples; peers %s", number, total, shown)
        metrics = {**outcome.client_metrics, "semi_global_samples": float(total), "semi_global_peers": float(len(used))}
        return replace(outcome, weights=weights, client_metrics=metrics)

    def _fresh_records(self, number: int) -> list[ClusterModelRecord]:
        """The other listed clusters' newest models that count for round ``number`` (none loaded yet)."""
        oldest = max(0, number - self.max_staleness_rounds)  # nothing older can count
        records = self.store.latest_cluster_models(self.federation, number, self.since, from_round=oldest)
        listed = {r.cluster: r for r in records if r.cluster in self.clusters and r.cluster != self.cluster}
        shells = [ClusterModel(r.cluster, r.round, r.num_samples, {}) for r in listed.values()]
        kept = fresh_peers(self.cluster, number, shells, self.max_staleness_rounds)
        return [listed[m.cluster] for m in kept]

    def _checked(self, record: ClusterModelRecord, own: Weights, number: int) -> ClusterModel | None:
        """A fresh peer's model, or None (recorded as refused) when it cannot be mixed into ``own``."""
        try:
            model = self._loaded(record)
            validate_weights(model.weights, own)
        except FedloomError as exc:  # a mismatch, a non-finite value, a blob that fails its hash
            reason = f"cluster {record.cluster!r} round {record.round}: its model was left out of round {number}: {exc}"
            log.warning("round %d: %s", number, reason)
            self.rejections.record_rejection(self.run_id, number, record.cluster, PEER_REFUSED, reason)
            return None
        return model

    def _loaded(self, record: ClusterModelRecord) -> ClusterModel:
        return ClusterModel(record.cluster, record.round, record.num_samples, self.store.load_cluster_model(record))

    def _recorded_peer(self, peer: PeerInput) -> ClusterModel:
        """A peer model named in this cluster's record, read back and checked against the recorded hash
        (cluster models are written once, so the newest of a round ``<= peer.round`` is that round's)."""
        found = self.store.latest_cluster_models(self.federation, peer.round, self.since, from_round=peer.round)
        record = next((r for r in found if r.cluster == peer.cluster), None)
        if record is None or record.round != peer.round or record.sha256 != peer.sha256:
            raise IntegrityError(
                f"round {peer.round} of cluster {peer.cluster!r} is not the cluster model {peer.sha256[:12]} that"
                f" cluster {self.cluster!r} recorded using"
            )
        return self._loaded(record)


def federation_synthesis(config: AggregatorConfig, store: DeploymentStore, run_id: str) -> SemiGlobalSynthesis | None:
    """The round-close step of ``[federation]``, or None for a single aggregator."""
    section = config.federation
    if not section.enabled:
        return None
    if not isinstance(store, ClusterStore):
        raise ConfigError(
            f"[federation] needs a store that keeps cluster models; {type(store).__name__} does not"
            " (use fedloom's SQL store, shared by every aggregator of the federation)"
        )
    return SemiGlobalSynthesis(store, store, run_id, config.run.name, section, store.get_run(run_id).created_at)
