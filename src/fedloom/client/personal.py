"""Personal keys (FedPer / FedBN style): tensors a client keeps for itself, never aggregated.

The strategy names them with glob patterns (``"fc2.*"``, ``"*bn*"``); they travel to
clients in ``FitConfig.extra["personal_keys"]``. Before training, a client puts its own
stored values of those tensors over the global model; after training it stores them
again. The server keeps the global values of personal keys unchanged. Values are kept
as safetensors files written atomically, one per client, in a local directory: the
simulation's per-run folder or the agent's own directory.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.core.weights import Weights

PERSONAL_KEYS = "personal_keys"


def personal_patterns(extra: Mapping[str, object]) -> tuple[str, ...]:
    """The personal-key patterns a FitConfig asks for (empty when none)."""
    value = extra.get(PERSONAL_KEYS, ())
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{PERSONAL_KEYS} must be a list of glob patterns, got {value!r} (set --personal-keys)")
    return tuple(value)


def is_personal(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class PersonalStore:
    """One safetensors file of personal tensors per client under ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, client_id: str) -> Path:
        if not client_id or "/" in client_id or client_id.startswith("."):
            raise ConfigError(f"client id {client_id!r} cannot name a personal-state file")
        return self.directory / f"{client_id}.safetensors"

    def load(self, client_id: str) -> Weights:
        path = self._path(client_id)
        return from_bytes(path.read_bytes())[0] if path.exists() else {}

    def save(self, client_id: str, weights: Mapping[str, np.ndarray]) -> None:
        """Write atomically: a crash leaves the previous file or the new one, never half of one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(client_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(to_bytes(dict(weights), client_id=client_id))
        os.replace(tmp, path)

    def forget(self, client_id: str) -> None:
        """Remove this client's file, so the next :meth:`load` is empty (nothing left to keep)."""
        self._path(client_id).unlink(missing_ok=True)


def with_personal(global_weights: Weights, client_id: str, patterns: Sequence[str], store: PersonalStore) -> Weights:
    """The global model with this client's stored personal tensors put over it."""
    mine = store.load(client_id)
    return {k: mine[k] if k in mine and is_personal(k, patterns) else v for k, v in global_weights.items()}


def keep_personal(weights: Weights, client_id: str, patterns: Sequence[str], store: PersonalStore) -> None:
    """Store the personal tensors of a freshly trained model."""
    store.save(client_id, {k: v for k, v in weights.items() if is_personal(k, patterns)})
