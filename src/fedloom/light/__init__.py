"""fedloom.light: an agent for devices too small for the full one (NumPy and the standard library only).

It speaks the same HTTP protocol as ``fedloom agent`` (docs/protocol.md) with ``urllib``,
reads and writes fedloom's safetensors payloads by hand (:mod:`fedloom.light.wire`),
keeps a minimal persisted state so a restart never double-uploads, and trains with any
object that has ``fit(weights, config) -> (weights, num_samples, metrics)``
(:class:`LightTrainer`; :class:`LightLogisticTrainer` is a ready one). Nothing here
imports another fedloom package, httpx, safetensors, FastAPI or PyTorch
(``tests/light/test_isolation.py`` runs a round with those blocked). Run it with
``fedloom-light`` or ``python -m fedloom.light``.
"""

from fedloom.light.agent import OBSOLETE_CODES, LightAgent, LightAgentError
from fedloom.light.client import LightClient, ServerRefusal, ServerUnavailable
from fedloom.light.logreg import LightLogisticTrainer
from fedloom.light.trainer import LightFitConfig, LightTrainer, checked_result
from fedloom.light.wire import Payload, WireError, content_hash, decode, encode

__all__ = [
    "OBSOLETE_CODES",
    "LightAgent",
    "LightAgentError",
    "LightClient",
    "LightFitConfig",
    "LightLogisticTrainer",
    "LightTrainer",
    "Payload",
    "ServerRefusal",
    "ServerUnavailable",
    "WireError",
    "checked_result",
    "content_hash",
    "decode",
    "encode",
]
