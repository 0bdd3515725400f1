"""Local training with the state a client keeps between rounds.

Both the simulation's ``fit_one`` and the deployed agent train through
:func:`fit_with_state`, so personal keys (FedPer/FedBN) and SCAFFOLD's client control
variate behave the same in both: the state lives in a local directory (per-run folder in
simulation, the agent's own directory in deployment), written atomically.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedloom.algorithms.scaffold import CONTROL_PREFIX, controls, model_part
from fedloom.client.personal import PersonalStore, keep_personal, personal_patterns, with_personal
from fedloom.client.terms import GRADIENT_CORRECTION
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.weights import Weights


def personal_store(state_dir: str | Path) -> PersonalStore:
    """Where personal tensors live under a client-state directory."""
    return PersonalStore(Path(state_dir) / "personal")


def fit_with_state(
    trainer: Trainer, weights: Weights, config: FitConfig, client_id: str, state_dir: str | Path | None
) -> FitResult:
    """``trainer.fit`` with this client's personal tensors and SCAFFOLD control variate applied."""
    patterns = personal_patterns(config.extra)
    server_c = controls(weights)
    if (patterns or server_c) and state_dir is None:
        raise ClientError("this strategy keeps client state, but no client state directory was given")
    root = Path(str(state_dir))
    personal = personal_store(root) if patterns else None
    model = model_part(weights)
    if personal is not None:
        model = with_personal(model, client_id, patterns, personal)
    if not server_c:
        result = trainer.fit(model, config)
    else:
        result = _scaffold_fit(
            trainer, model, server_c, config, client_id, PersonalStore(Path(str(state_dir)) / "scaffold")
        )
    if personal is not None and isinstance(result, FitResult):
        keep_personal(result.weights, client_id, patterns, personal)
    return result


def _scaffold_fit(
    trainer: Trainer, model: Weights, server_c: Weights, config: FitConfig, client_id: str, store: PersonalStore
) -> FitResult:
    """Train with the correction ``c − c_i``; update ``c_i`` (option II) and return ``Δc_i`` with the model."""
    saved = store.load(client_id)
    client_c = {k: saved.get(k, np.zeros_like(v)).astype(np.float64) for k, v in server_c.items()}
    correction = {k: (server_c[k].astype(np.float64) - client_c[k]).astype(np.float32) for k in server_c}
    corrected = dataclasses.replace(config, extra={**config.extra, GRADIENT_CORRECTION: correction})
    result = trainer.fit(model, corrected)
    steps = float(result.metrics.get("local_steps", 0))
    if not steps > 0:
        raise ClientError(
            "SCAFFOLD needs the metric local_steps > 0 from Trainer.fit (the built-in trainers report it)"
        )
    scale = 1.0 / (steps * config.lr)
    new_c = {
        k: client_c[k] - server_c[k] + scale * (model[k].astype(np.float64) - result.weights[k].astype(np.float64))
        for k in server_c
    }
    store.save(client_id, {k: v.astype(server_c[k].dtype) for k, v in new_c.items()})
    deltas = {CONTROL_PREFIX + k: (new_c[k] - client_c[k]).astype(server_c[k].dtype) for k in server_c}
    return FitResult({**result.weights, **deltas}, result.num_samples, result.metrics)
