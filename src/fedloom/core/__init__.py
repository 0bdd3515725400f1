"""fedloom.core — pure data and maths with no I/O; imports nothing else of fedloom."""

from fedloom.core.errors import (
    ClientError,
    ConfigError,
    DataError,
    FedloomError,
    IntegrityError,
    NonFiniteError,
    PayloadTooLargeError,
    RejectedUpdateError,
    SerializationError,
    StoreError,
    ValidationError,
    WeightsMismatchError,
)
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.metrics import validate_metrics
from fedloom.core.observe import RoundObserver, RoundSummary, RunEnd, RunInfo
from fedloom.core.reserved import model_part
from fedloom.core.rng import rng_for, stream_key
from fedloom.core.serialization import ModelHeader, content_hash, from_bytes, to_bytes
from fedloom.core.store_protocols import AccessStore, DeploymentStore, RunReader, RunWriter
from fedloom.core.terms import NO_TERMS, AffineTerm, ClientTerms
from fedloom.core.update import ClientUpdate, UpdateReport
from fedloom.core.weights import (
    Weights,
    check_compatible,
    check_finite,
    check_structure,
    copy_weights,
    nbytes,
    num_parameters,
    validate_weights,
    weights_equal,
)

__all__ = [
    "NO_TERMS",
    "AccessStore",
    "AffineTerm",
    "ClientError",
    "ClientTerms",
    "ClientUpdate",
    "ConfigError",
    "DataError",
    "DeploymentStore",
    "EvalConfig",
    "FedloomError",
    "FitConfig",
    "FitResult",
    "IntegrityError",
    "ModelHeader",
    "NonFiniteError",
    "PayloadTooLargeError",
    "RejectedUpdateError",
    "RoundObserver",
    "RoundSummary",
    "RunEnd",
    "RunInfo",
    "RunReader",
    "RunWriter",
    "SerializationError",
    "StoreError",
    "UpdateReport",
    "ValidationError",
    "Weights",
    "WeightsMismatchError",
    "check_compatible",
    "check_finite",
    "check_structure",
    "content_hash",
    "copy_weights",
    "from_bytes",
    "model_part",
    "nbytes",
    "num_parameters",
    "rng_for",
    "stream_key",
    "to_bytes",
    "validate_metrics",
    "validate_weights",
    "weights_equal",
]
