"""A client's compressed upload: the delta encoded under the run's scheme, the residual kept locally.

Error feedback needs what the previous upload still owed, so the residual lives in the
client's state directory (``<state_dir>/compression/<client>.safetensors``, written
atomically like every other part's state) and survives an agent restart. The residual is
written before the upload leaves: a refused upload loses its delta anyway, and the
residual only ever holds the compression error, never the update itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedloom.client.client_state import LocalContext
from fedloom.client.personal import PersonalStore
from fedloom.client.round_meter import known_agent_id, upload_header_fields
from fedloom.core.compression import CompressionSpec, decode_update, encode_update, spec_from_extra
from fedloom.core.compression_wire import TENSOR_BYTES_METRIC, WIRE_BYTES_METRIC, from_wire, to_wire
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.weights import Weights

#: the folder under a client's state directory holding its error-feedback residual
RESIDUAL_FOLDER = "compression"


@dataclass(frozen=True)
class CompressedUpload:
    """The bytes to send, and their size beside the uncompressed tensors' (what a round records)."""

    body: bytes
    tensor_bytes: int  # the local model's tensor data, uncompressed

    @property
    def wire_bytes(self) -> int:
        """The upload's size on the wire, header included."""
        return len(self.body)


def residual_store(state_dir: str | Path) -> PersonalStore:
    """Where error-feedback residuals live under a client-state directory."""
    return PersonalStore(Path(state_dir) / RESIDUAL_FOLDER)


def compressed_upload(
    local: Weights,
    start: Weights,
    spec: CompressionSpec,
    *,
    client_id: str,
    state_dir: str | Path | None,
    round: int,
    num_samples: int,
    extra: Mapping[str, str] | None = None,
) -> CompressedUpload:
    """Encode ``local − start`` plus the kept residual, keep the new residual, and serialise."""
    if state_dir is None:
        raise ClientError("compressed updates keep an error-feedback residual in a client state directory, none given")
    store = residual_store(state_dir)
    packed, owed = encode_update(local, start, spec, store.load(client_id))
    tensors, header = to_wire(packed)
    fields = {**(extra or {}), **header}
    body = to_bytes(tensors, round=round, client_id=client_id, num_samples=num_samples, extra=fields)
    if owed:
        store.save(client_id, owed)
    else:
        store.forget(client_id)
    return CompressedUpload(body, int(sum(np.asarray(v).nbytes for v in local.values())))


def as_received(result: FitResult, start: Weights, config: FitConfig, context: LocalContext) -> FitResult:
    """``result`` as the aggregator will see it under the run's compression (unchanged when there is none).

    The simulation uses this to train with exactly the loss a deployed run has: the
    trained model is encoded (residual from the state directory), serialised, parsed and
    decoded again, and the upload's bytes are reported as two metrics.
    """
    spec = spec_from_extra(config.extra)
    if spec is None:
        return result
    upload = compressed_upload(
        result.weights,
        start,
        spec,
        client_id=context.client_id,
        state_dir=context.state_dir,
        round=config.round,
        num_samples=result.num_samples,
    )
    sizes = {WIRE_BYTES_METRIC: float(upload.wire_bytes), TENSOR_BYTES_METRIC: float(upload.tensor_bytes)}
    return FitResult(decoded_model(upload.body, start), result.num_samples, {**result.metrics, **sizes})


def decoded_model(body: bytes, start: Weights) -> Weights:
    """The local model the aggregator decodes from the compressed upload ``body`` (bitwise the same)."""
    tensors, header = from_bytes(body)
    return decode_update(from_wire(tensors, header.extra), start)


def agent_update_body(
    agent_id: str | None,
    round: int,
    fitted: FitResult,
    start: Weights,
    system: Mapping[str, float],
    config_extra: Mapping[str, object],
    state_dir: Path,
) -> tuple[bytes, str]:
    """An agent's upload of ``fitted`` (trained from ``start``), compressed when the task says so,
    and the hash of the local model the aggregator will record from it (the lineage lists that one)."""
    fields = upload_header_fields(fitted.metrics, system)
    client_id, spec = known_agent_id(agent_id), spec_from_extra(config_extra)
    if spec is None:
        body = to_bytes(fitted.weights, round=round, client_id=client_id, num_samples=fitted.num_samples, extra=fields)
        return body, content_hash(fitted.weights)
    upload = compressed_upload(
        fitted.weights,
        start,
        spec,
        client_id=client_id,
        state_dir=state_dir,
        round=round,
        num_samples=fitted.num_samples,
        extra=fields,
    )
    return upload.body, content_hash(decoded_model(upload.body, start))
