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

from fedloom.client.personal import PersonalStore, keep_personal, personal_patterns, with_personal
from fedloom.client.terms import (
    CURVATURE,
    CURVATURE_LAMBDA,
    FISHER_PREFIX,
    GRADIENT_CORRECTION,
    REPORT_FISHER,
    Curvature,
)
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.reserved import (
    CONTROL_PREFIX,
    FISHER_SUM_PREFIX,
    WEIGHTED_SUM_PREFIX,
    controls,
    curvature_sums,
    model_part,
)
from fedloom.core.weights import Weights


def personal_store(state_dir: str | Path) -> PersonalStore:
    """Where personal tensors live under a client-state directory."""
    return PersonalStore(Path(state_dir) / "personal")


def fit_with_state(
    trainer: Trainer, weights: Weights, config: FitConfig, client_id: str, state_dir: str | Path | None
) -> FitResult:
    """``trainer.fit`` with this client's personal tensors, SCAFFOLD control variate or FedCurv penalty."""
    patterns = personal_patterns(config.extra)
    model = model_part(weights)
    server_c, fisher_sums = controls(weights), curvature_sums(weights)
    if not (patterns or server_c or fisher_sums[0]):  # FedAvg and friends: nothing kept between rounds
        return trainer.fit(model, config)
    if state_dir is None:
        raise ClientError("this strategy keeps client state, but no client state directory was given")
    root = Path(str(state_dir))
    personal = personal_store(root) if patterns else None
    if personal is not None:
        model = with_personal(model, client_id, patterns, personal)
    if server_c:
        result = _scaffold_fit(trainer, model, server_c, config, client_id, PersonalStore(root / "scaffold"))
    elif fisher_sums[0]:
        result = _fedcurv_fit(trainer, model, fisher_sums, config, client_id, PersonalStore(root / "fedcurv"))
    else:
        result = trainer.fit(model, config)
    if personal is not None and isinstance(result, FitResult):
        keep_personal(result.weights, client_id, patterns, personal)
    return result


def _scaffold_fit(
    trainer: Trainer, model: Weights, server_c: Weights, config: FitConfig, client_id: str, store: PersonalStore
) -> FitResult:
    """Train with the correction ``c − c_i``; update ``c_i`` (option II) and return ``Δc_i`` with the model."""
    saved = store.load(client_id)
    # np.asarray throughout: arithmetic on 0-d arrays returns NumPy scalars, which validate_weights refuses
    client_c = {k: np.asarray(saved.get(k, np.zeros_like(v)), np.float64) for k, v in server_c.items()}
    correction = {k: np.asarray(server_c[k].astype(np.float64) - client_c[k], np.float32) for k in server_c}
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
    store.save(client_id, {k: np.asarray(v, server_c[k].dtype) for k, v in new_c.items()})
    deltas = {CONTROL_PREFIX + k: np.asarray(new_c[k] - client_c[k], server_c[k].dtype) for k in server_c}
    return FitResult({**result.weights, **deltas}, result.num_samples, result.metrics)


def _fedcurv_fit(
    trainer: Trainer,
    model: Weights,
    sums: tuple[Weights, Weights],
    config: FitConfig,
    client_id: str,
    store: PersonalStore,
) -> FitResult:
    """Train with FedCurv's penalty from the other clients' Fisher sums; return this client's
    ``F_i`` and ``F_i ⊙ θ_i`` in the reserved slots and keep them to subtract next round."""
    total_f, total_fw = sums
    mine = store.load(client_id)
    own = bool(mine) and int(mine["round"][0]) == config.round - 1  # it is in the sums it receives
    a = {k: total_f[k].astype(np.float64) - (mine[f"u/{k}"] if own else 0.0) for k in total_f}
    b = {k: total_fw[k].astype(np.float64) - (mine[f"v/{k}"] if own else 0.0) for k in total_fw}
    weight = float(config.extra.get(CURVATURE_LAMBDA, 1.0))
    extra = {**config.extra, CURVATURE: Curvature(a, b, weight), REPORT_FISHER: True}
    result = trainer.fit(model, dataclasses.replace(config, extra=extra))
    fisher = {k[len(FISHER_PREFIX) :]: v for k, v in result.weights.items() if k.startswith(FISHER_PREFIX)}
    if not fisher:
        raise ClientError("FedCurv needs Trainer.fit to return the diagonal Fisher when asked (report_fisher)")
    trained = model_part(result.weights)
    u = {k: np.asarray(fisher.get(k, np.zeros_like(v)), np.float64) for k, v in total_f.items()}
    v = {k: u[k] * trained[k].astype(np.float64) for k in total_f}
    kept = {**{f"u/{k}": x for k, x in u.items()}, **{f"v/{k}": x for k, x in v.items()}}
    store.save(client_id, {**kept, "round": np.array([config.round], np.int64)})
    slots = {FISHER_SUM_PREFIX + k: u[k].astype(total_f[k].dtype) for k in total_f}
    slots |= {WEIGHTED_SUM_PREFIX + k: v[k].astype(total_fw[k].dtype) for k in total_fw}
    return FitResult({**trained, **slots}, result.num_samples, result.metrics)
