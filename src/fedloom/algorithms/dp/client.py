"""DP's client part: clip the update at the client and add noise there (client and local modes).

- **client** mode (for secure aggregation, which hides each update from the server): each
  of the m selected clients clips ``Δ = w − g`` to C and adds ``N(0, (z·C)²/m)`` per
  coordinate, so the *sum* of the m updates carries ``N(0, (z·C)²)``, the central noise,
  without any one party adding it. The server sees only the sum when the sum is computed
  under secure aggregation; without it, each single update is protected only by its share.
- **local** mode: each client adds the full ``N(0, (z·C)²)`` to its clipped update, so every
  upload is private on its own (the server is not trusted at all), at m times the variance.

Integer tensors are sent as trained and ignored by the server (it keeps the global values).
The part runs through the client-parts mechanism (``FitConfig.extra["client_parts"]``), so a
deployed agent and a simulated client run this same code; its outcome replaces the model's
float tensors by their privatised values (``g + clip(Δ) + noise``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like
from fedloom.algorithms.dp.clipping import clip_delta, update_delta
from fedloom.algorithms.units import ClientOutcome, ClientRound
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitResult
from fedloom.core.reserved import model_part
from fedloom.core.rng import stream_key
from fedloom.core.terms import NO_TERMS, ClientTerms

#: the wire keys of the client part (JSON values in FitConfig.extra)
DP_MODE, DP_NOISE, DP_CLIP, DP_SHARES, DP_NOISE_SEED = (
    "dp_mode",
    "dp_noise_multiplier",
    "dp_clip_norm",
    "dp_noise_shares",
    "dp_noise_seed",
)


def _number(extra: Mapping[str, Any], key: str) -> float:
    value = extra.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"the DP client part needs {key} > 0 in FitConfig.extra, got {value!r}")
    return float(value)


def client_noise_std(extra: Mapping[str, Any]) -> float:
    """The noise standard deviation one client adds: z·C/√m (client mode) or z·C (local)."""
    mode = extra.get(DP_MODE)
    if mode not in ("client", "local"):
        raise ConfigError(f"the DP client part runs in mode 'client' or 'local', got {DP_MODE}={mode!r}")
    std = _number(extra, DP_NOISE) * _number(extra, DP_CLIP)
    return std / math.sqrt(_number(extra, DP_SHARES)) if mode == "client" else std


def client_noise_generator(extra: Mapping[str, Any], round: int, fit_seed: int) -> np.random.Generator:
    """Fresh OS entropy; with ``dp_noise_seed`` (tests only, no privacy) one stream per round and
    client (the fit seed differs per client)."""
    seed = extra.get(DP_NOISE_SEED)
    if seed is None:
        return np.random.default_rng(np.random.SeedSequence())
    return np.random.default_rng(stream_key(int(seed), "dp-client", round, fit_seed))


@dataclass(frozen=True)
class DpClient:
    """Clip and noise the trained update before it leaves the client (no state kept)."""

    name: str = "dp"
    keeps_state: bool = False

    def terms(self, step: ClientRound) -> ClientTerms:
        return NO_TERMS

    def outcome(self, step: ClientRound, trained: FitResult) -> ClientOutcome:
        extra = step.config.extra
        std = client_noise_std(extra)
        clipped, _ = clip_delta(update_delta(model_part(trained.weights), step.model), _number(extra, DP_CLIP))
        rng = client_noise_generator(extra, step.config.round, step.config.seed)
        sent = {}
        for name in sorted(clipped):  # name order, not dict order: a payload's order may differ
            delta, start = clipped[name], step.model[name]
            noisy = np.asarray(start, np.float64) + delta + rng.normal(0.0, std, np.shape(start))
            sent[name] = cast_like(noisy, start)
        return ClientOutcome(sent, {})
