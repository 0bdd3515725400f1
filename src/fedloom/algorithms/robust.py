"""Byzantine-robust aggregation as pure functions over stacked, flattened models.

Each function takes ``models`` — an ``(n, d)`` float64 matrix, one flattened client
model per row (its floating-point tensors only: the aggregators give integer counters
the round's median instead) — and returns one flattened model. They need every update at once, so the
aggregators built on them are not mergeable (simulation workers send each update).

References: coordinate-wise median and trimmed mean (Yin et al. 2018); geometric median
by smoothed Weiszfeld (Pillutla et al., RFA, 2022); Krum and Multi-Krum (Blanchard et al.
2017); Bulyan (El Mhamdi et al. 2018); norm bounding (Sun et al. 2019, "Can you really
backdoor FL?"); centred clipping (Karimireddy et al. 2021).
"""

from __future__ import annotations

import numpy as np

from fedloom.core.errors import ConfigError, ValidationError


def _vector(value: object) -> np.ndarray:
    """``value`` as a float64 array (numpy's reductions are typed loosely)."""
    return np.asarray(value, np.float64)


def _rows(models: np.ndarray) -> int:
    if models.ndim != 2 or len(models) == 0:
        raise ValidationError(f"robust aggregation needs a non-empty (n, d) matrix, got shape {models.shape}")
    return len(models)


def coordinate_median(models: np.ndarray) -> np.ndarray:
    """The median of every coordinate (unweighted).

    For an even count the two middle values are halved before they are added (exact for
    a power of two), so two values near float64's limit do not sum to Inf.
    """
    n = _rows(models)
    ordered = np.sort(models, axis=0)
    middle = n // 2
    if n % 2:
        return _vector(ordered[middle])
    return _vector(ordered[middle - 1] / 2 + ordered[middle] / 2)


def trimmed_mean(models: np.ndarray, beta: float) -> np.ndarray:
    """Per coordinate, drop the ``floor(beta·n)`` largest and smallest values and average the rest."""
    n = _rows(models)
    if not 0.0 <= beta < 0.5:
        raise ConfigError(f"trim_beta must be in [0, 0.5), got {beta} (set --trim-beta)")
    k = int(np.floor(beta * n))
    ordered = np.sort(models, axis=0)
    return _vector((ordered[k : n - k] / (n - 2 * k)).sum(axis=0))  # divided first: a sum of 1e308s is Inf


def geometric_median(
    models: np.ndarray, weights: np.ndarray | None = None, *, max_iter: int = 100, tol: float = 1e-7, nu: float = 1e-8
) -> np.ndarray:
    """The point minimising the weighted sum of Euclidean distances (smoothed Weiszfeld, RFA).

    ``nu`` keeps a model that coincides with the estimate from dividing by zero; the loop
    stops when the estimate moves less than ``tol`` relative to its norm. Models near
    float64's limit are first divided by a power of two (:func:`power_of_two_scale`; the
    geometric median scales with them), so their distances do not square to Inf.
    """
    n = _rows(models)
    scale = power_of_two_scale(models)
    scaled = models / scale
    alphas = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    alphas = alphas / alphas.sum()
    estimate = alphas @ scaled
    for _ in range(max_iter):
        distances = np.maximum(nu, np.linalg.norm(scaled - estimate, axis=1))
        betas = alphas / distances
        updated = betas @ scaled / betas.sum()
        moved = float(np.linalg.norm(updated - estimate))
        estimate = updated
        if moved <= tol * max(1.0, float(np.linalg.norm(estimate))):
            break
    return _vector(estimate * scale)


def power_of_two_scale(*arrays: np.ndarray) -> float:
    """1, or the power of two that brings the largest magnitude in ``arrays`` down to 2**400.

    Dividing by a power of two is exact, so scaled distances rank models exactly as the
    true ones do, while squares and sums of up to 2**200 coordinates stay finite even for
    values near float64's limit (1e308 squared is Inf).
    """
    top = max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)
    if top <= 2.0**400:
        return 1.0
    return float(np.ldexp(1.0, int(np.ceil(np.log2(top))) - 400))


def _relative(models: np.ndarray, center: np.ndarray | None) -> tuple[np.ndarray, float]:
    """``(models - center) / scale`` and the scale: Krum's geometry on the updates, not the models."""
    origin = np.zeros(models.shape[1]) if center is None else np.asarray(center, np.float64)
    scale = power_of_two_scale(models, origin)
    return models / scale - origin / scale, scale


def _pairwise_sq_distances(deltas: np.ndarray) -> np.ndarray:
    """``Σ_k (x_ik - x_jk)²`` for every pair, computed from the differences, one row at a time.

    The expansion ``‖x‖² + ‖y‖² - 2x·y`` cancels catastrophically when the models are far
    from the origin compared with their spread (at norm 1e7 × spread it ranks them by
    rounding noise); the differences themselves lose nothing. Memory is O(n·d).
    """
    n = len(deltas)
    distances = np.empty((n, n), np.float64)
    for i in range(n):
        diff = deltas - deltas[i]
        distances[i] = np.einsum("ij,ij->i", diff, diff)
    return distances


def _check_krum(n: int, f: int) -> None:
    if f < 0:
        raise ConfigError(f"byzantine_f must be >= 0, got {f} (set --byzantine-f)")
    if n < 2 * f + 3:  # Blanchard et al.: Krum's guarantee needs n > 2f + 2
        raise ConfigError(
            f"Krum with f={f} needs at least {2 * f + 3} updates, got {n} (lower --byzantine-f or select more clients)"
        )


def krum_scores(models: np.ndarray, f: int, center: np.ndarray | None = None) -> np.ndarray:
    """Each model's sum of squared distances to its ``n - f - 2`` nearest other models.

    ``center`` (the global model) makes the distances be computed on the updates
    ``model - center``; they are the same distances, with less rounding.
    """
    n = _rows(models)
    _check_krum(n, f)
    deltas, scale = _relative(models, center)
    return _vector(_scores(deltas, n - f - 2) * scale * scale)


def _scores(deltas: np.ndarray, neighbours: int) -> np.ndarray:
    distances = _pairwise_sq_distances(deltas)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, :neighbours]
    scores: np.ndarray = nearest.sum(axis=1)
    return scores


def krum_select(models: np.ndarray, f: int, m: int = 1, center: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``m`` models with the lowest Krum scores (ties broken by index)."""
    n = _rows(models)
    if not 1 <= m <= n:
        raise ConfigError(f"multikrum_m must be between 1 and the number of updates ({n}), got {m}")
    _check_krum(n, f)
    deltas, _ = _relative(models, center)  # scaled scores rank exactly as the true ones
    return np.argsort(_scores(deltas, n - f - 2), kind="stable")[:m]


def krum(models: np.ndarray, f: int, m: int = 1, center: np.ndarray | None = None) -> np.ndarray:
    """Krum (``m=1``: the best-scored model) or Multi-Krum (the mean of the ``m`` best)."""
    chosen = models[krum_select(models, f, m, center)]
    return _vector(chosen[0] if m == 1 else (chosen / m).sum(axis=0))


def bulyan(models: np.ndarray, f: int, center: np.ndarray | None = None) -> np.ndarray:
    """Bulyan: pick ``θ = n - 2f`` models by repeated Krum, then per coordinate average the
    ``θ - 2f`` values closest to their median. Requires ``n ≥ 4f + 3``."""
    n = _rows(models)
    if n < 4 * f + 3:
        raise ConfigError(
            f"Bulyan with f={f} needs n >= 4f+3 = {4 * f + 3} updates, got {n}"
            " (lower --byzantine-f or select more clients per round)"
        )
    deltas, _ = _relative(models, center)
    remaining = list(range(n))
    chosen: list[int] = []
    for _ in range(n - 2 * f):
        # Krum over what is left; near the end fewer than n - f - 2 neighbours remain, so use what there is
        neighbours = max(1, len(remaining) - f - 2)
        best = int(np.argmin(_scores(deltas[remaining], neighbours))) if len(remaining) > 1 else 0
        pick = remaining[best]
        chosen.append(pick)
        remaining.remove(pick)
    selected = models[chosen]
    keep = len(chosen) - 2 * f
    median = np.median(selected, axis=0)
    closest = np.argsort(np.abs(selected - median), axis=0, kind="stable")[:keep]
    return _vector((np.take_along_axis(selected, closest, axis=0) / keep).sum(axis=0))


def _clipped_updates(models: np.ndarray, origin: np.ndarray, max_norm: float) -> np.ndarray:
    """Every ``model - origin`` scaled to L2 norm at most ``max_norm``.

    The differences are taken after dividing by a power of two (:func:`power_of_two_scale`),
    so ``1e308 - (-1e308)`` and the squared norms stay finite; the clipped updates are
    small, so multiplying back cannot overflow.
    """
    scale = power_of_two_scale(models, origin)
    deltas = models / scale - origin / scale
    norms = np.sqrt(np.einsum("ij,ij->i", deltas, deltas))[:, None]
    factor = np.minimum(scale, max_norm / np.maximum(norms, 1e-12 / scale))
    clipped: np.ndarray = deltas * factor
    return clipped


def norm_bounded_mean(models: np.ndarray, center: np.ndarray, max_norm: float, weights: np.ndarray) -> np.ndarray:
    """The weighted mean after scaling every update ``model - center`` to L2 norm at most ``max_norm``."""
    _rows(models)
    if not max_norm > 0:
        raise ConfigError(f"clip_norm must be > 0, got {max_norm} (set --clip-norm)")
    w = np.asarray(weights, np.float64)
    mean_delta: np.ndarray = (w / w.sum()) @ _clipped_updates(models, center, max_norm)
    return _vector(center + mean_delta)


def centered_clip(models: np.ndarray, center: np.ndarray, tau: float, iterations: int = 3) -> np.ndarray:
    """Centred clipping: ``v ← v + mean_i clip(x_i - v, τ)``, ``iterations`` times from ``center``."""
    _rows(models)
    if not tau > 0:
        raise ConfigError(f"clip_norm must be > 0, got {tau} (set --clip-norm)")
    if iterations < 1:
        raise ConfigError(f"clip_iterations must be >= 1, got {iterations}")
    estimate = np.array(center, np.float64, copy=True)
    for _ in range(iterations):
        estimate = estimate + _clipped_updates(models, estimate, tau).mean(axis=0)
    return estimate
