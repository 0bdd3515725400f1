"""fedloom.store — the persistent record of every run: SQL rows plus content-addressed blobs.

The round engine and the simulation driver write through the :class:`Store` protocol;
:class:`SqlStore` implements it (and the readers used by the CLI, the dashboard and a
resuming aggregator) on SQLite or any SQLAlchemy database, with model bytes in a
:class:`FileBlobStore`. For deployments it also keeps the join tokens and the agents
registered with them (only hashes of their secrets).
"""

from fedloom.store.blobs import BlobStore, FileBlobStore
from fedloom.store.protocol import Store
from fedloom.store.records import (
    AgentRecord,
    ClientRecord,
    MetricRecord,
    ModelRecord,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    TokenRecord,
)
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
    "Store",
    "TokenRecord",
    "resolve_home",
]
