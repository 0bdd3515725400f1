"""What a client sends back after local training."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedloom.core.errors import ValidationError
from fedloom.core.serialization import content_hash
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class UpdateReport:
    """An accepted update without its tensors: what is recorded when the weights were pre-merged.

    Simulation workers fold many clients into one partial sum; each client still leaves a
    report (who, which round, how many samples, metrics, and the hash of its model).
    """

    client_id: str
    round: int
    num_samples: int
    metrics: Mapping[str, float]
    sha256: str
    #: the update's safetensors bytes as the client sent them, when it came over the wire:
    #: the store keeps exactly these (no second serialisation, no second content hash)
    payload: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ClientUpdate:
    """One client's result for one round.

    ``weights`` are the full local model (not a delta). ``num_samples`` is the number of
    training examples behind it, which FedAvg uses as the aggregation weight.
    """

    client_id: str
    round: int
    weights: Weights
    num_samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: the content hash already verified (an upload's header, checked by ``from_bytes``)
    sha256: str | None = field(default=None, compare=False)
    #: the bytes as received (see :attr:`UpdateReport.payload`)
    payload: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ValidationError(f"client_id must be a non-empty string, got {self.client_id!r}")
        if not isinstance(self.round, int) or self.round < 0:
            raise ValidationError(f"round must be a non-negative integer, got {self.round!r}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples <= 0:
            raise ValidationError(f"num_samples must be a positive integer, got {self.num_samples!r}")
        for key, value in self.metrics.items():
            if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ValidationError(f"metric {key!r} must be a finite number, got {value!r}")

    def report(self) -> UpdateReport:
        """This update's :class:`UpdateReport` (hashes the weights unless the hash is already known)."""
        sha256 = self.sha256 if self.sha256 is not None else content_hash(self.weights)
        return UpdateReport(self.client_id, self.round, self.num_samples, dict(self.metrics), sha256, self.payload)
