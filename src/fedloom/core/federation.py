"""The shared record of a federation of several aggregators: cluster models, and the store role that keeps them.

Several aggregators (one *cluster* each) share one database and one blob store. Each
closed round of a cluster leaves one :class:`ClusterModelRecord`: the model its own
agents' updates made (its *cluster model*), the samples behind it, and which of the
other clusters' models its semi-global model was synthesised from. Aggregators read each
other only through these records (no peer HTTP), so what one aggregator used can be
checked afterwards from the store alone.

Pure data and a :class:`~typing.Protocol` here, in core, so the server depends on the
role and not on :mod:`fedloom.store`, which implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from fedloom.core.weights import Weights


@dataclass(frozen=True)
class PeerInput:
    """One other cluster's model that went into a semi-global model: which cluster, which round, how many samples."""

    cluster: str
    round: int
    num_samples: int
    sha256: str


@dataclass(frozen=True)
class ClusterModelRecord:
    """A cluster's model of one round (``sha256`` is its content hash) and the peer models its
    semi-global model was made from (empty when no peer had a fresh enough model)."""

    id: int
    run_id: str
    federation: str
    cluster: str
    round: int
    num_samples: int
    sha256: str
    blob_key: str | None
    peers: tuple[PeerInput, ...]
    created_at: datetime


@runtime_checkable
class ClusterStore(Protocol):
    """What an aggregator in a federation needs of the shared store."""

    def save_cluster_model(
        self,
        run_id: str,
        federation: str,
        cluster: str,
        round: int,
        weights: Weights,
        num_samples: int,
        peers: Sequence[PeerInput],
    ) -> ClusterModelRecord:
        """Record a cluster's model of ``round`` once: if the run already has one for that round,
        nothing is written and the stored record is returned (the first write wins)."""
        ...

    def cluster_model(self, run_id: str, round: int) -> ClusterModelRecord | None:
        """The run's cluster model of ``round``, or None."""
        ...

    def latest_cluster_models(
        self, federation: str, up_to_round: int, since: datetime, from_round: int = 0
    ) -> list[ClusterModelRecord]:
        """Per cluster of ``federation``, its newest cluster model of a round in ``[from_round, up_to_round]``,
        from runs that had not finished before ``since`` (so an earlier federation of the same name is ignored)."""
        ...

    def load_cluster_model(self, record: ClusterModelRecord) -> Weights:
        """The weights of a cluster model, verified against its content hash."""
        ...
