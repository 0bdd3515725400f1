"""fedloom.store — the persistent record of every run: SQL rows plus content-addressed blobs.

The round engine, the simulation and the deployed aggregator depend on the role
protocols of :mod:`fedloom.core.store_protocols` (``RunWriter``, ``RunReader``,
``AccessStore``, ``DeploymentStore``), never on this package; :class:`SqlStore`
implements all of them on SQLite or any SQLAlchemy database, with model bytes in a
:class:`FileBlobStore`. For deployments it also keeps the join tokens and the agents
registered with them (only hashes of their secrets). The record types are those of
:mod:`fedloom.core.records`, re-exported here.
"""

from fedloom.core.records import (
    AgentRecord,
    ClientRecord,
    MetricRecord,
    ModelRecord,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    TokenRecord,
)
from fedloom.store.blobs import BlobStore, FileBlobStore
from fedloom.store.schema import SCHEMA_VERSION
from fedloom.store.sql import BLOBS_DIRNAME, SqlStore, resolve_home

__all__ = [
    "BLOBS_DIRNAME",
    "SCHEMA_VERSION",
    "AgentRecord",
    "BlobStore",
    "ClientRecord",
    "FileBlobStore",
    "MetricRecord",
    "ModelRecord",
    "RejectionRecord",
    "RoundRecord",
    "RunRecord",
    "SqlStore",
    "TokenRecord",
    "resolve_home",
]
