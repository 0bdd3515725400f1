"""The one settings type of differential privacy, validated where it is built.

The same field names are used by ``simulate(privacy=...)``, the ``fedloom sim --dp-*`` flags
and the aggregator's ``[privacy]`` table, so a setting means the same thing everywhere. A
configuration that cannot give the privacy it claims is refused here, naming the field and
the fix: noise without clipping, a clip norm that is not positive, no δ or a δ so large that
"releasing one client's data in the clear" would satisfy it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from fedloom.algorithms.privacy_accountant import ACCOUNTANTS
from fedloom.core.errors import ConfigError

#: central: the server clips and noises; client: clients clip and add their share of the noise
#: (for secure aggregation); local: each client adds the full noise to its own update
PRIVACY_MODES = ("central", "client", "local")


def _positive(name: str, value: float | None, fix: str) -> None:
    if value is None or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"privacy {name} must be a positive number, got {value!r}: {fix}")


@dataclass(frozen=True)
class PrivacySettings:
    """User-level DP of a run.

    ``noise_multiplier`` z: the noise standard deviation is z·``clip_norm`` on the sum of the
    clipped updates. ``delta``: the δ of the reported (ε, δ). With ``adaptive_clip`` the clip
    norm starts at ``clip_norm`` and follows the ``target_quantile`` gamma of the update norms
    (Andrew et al. 2021) with learning rate ``clip_lr`` η and count noise ``clip_count_stddev``
    σ_b (default m/20 for m clients a round). ``target_epsilon`` ends the run before a round
    would spend more. ``noise_seed`` makes the noise reproducible: for tests only, it gives NO
    privacy (anyone with the seed can subtract the noise) and is recorded as
    ``privacy/noise_reproducible = 1``.
    """

    mode: str = "central"
    noise_multiplier: float | None = None
    clip_norm: float | None = None
    delta: float | None = None
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clip_count_stddev: float | None = None
    target_epsilon: float | None = None
    accountant: str = "rdp"
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PRIVACY_MODES:
            raise ConfigError(f"privacy mode must be one of {', '.join(PRIVACY_MODES)}, got {self.mode!r}")
        if self.clip_norm is None:
            raise ConfigError(
                "privacy clip_norm is missing: noise without clipping bounds nothing (one update can be "
                "arbitrarily large); set clip_norm (--dp-clip), e.g. the median update norm of a plain run"
            )
        _positive("clip_norm", self.clip_norm, "set clip_norm (--dp-clip) above 0")
        _positive("noise_multiplier", self.noise_multiplier, "set noise_multiplier (--dp-noise), e.g. 1.0")
        if self.delta is None or not (math.isfinite(self.delta) and 0.0 < self.delta < 1.0):
            raise ConfigError(
                f"privacy delta must be in (0, 1), got {self.delta!r}: set delta (--dp-delta) well below "
                "1/number of clients, e.g. 1e-5"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"privacy accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}")
        if self.target_epsilon is not None:
            _positive("target_epsilon", self.target_epsilon, "set target_epsilon above 0 or leave it out")
        if self.adaptive_clip:
            self._check_adaptive()

    def _check_adaptive(self) -> None:
        if self.mode != "central":
            raise ConfigError(
                f"privacy adaptive_clip works only with mode='central' (got mode={self.mode!r}): the noised "
                "count of unclipped updates is computed by the server; use a fixed clip_norm"
            )
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(f"privacy target_quantile must be in (0, 1), got {self.target_quantile}")
        _positive("clip_lr", self.clip_lr, "set clip_lr, e.g. 0.2")
        if self.clip_count_stddev is None:
            return  # m/20 once the number of clients per round is known (:meth:`for_round_size`)
        _positive("clip_count_stddev", self.clip_count_stddev, "set clip_count_stddev or leave it out")
        assert self.noise_multiplier is not None
        if 2.0 * self.clip_count_stddev <= self.noise_multiplier:
            raise ConfigError(
                f"privacy clip_count_stddev={self.clip_count_stddev:.4g} leaves no noise for the updates: it must "
                f"be above noise_multiplier/2 = {self.noise_multiplier / 2} (Andrew et al. 2021 split z between the "
                "count and the updates; by default it is m/20 for m clients a round); raise clip_count_stddev, "
                "select more clients per round, or use a fixed clip"
            )

    @property
    def count_stddev(self) -> float:
        """σ_b of the unclipped count (adaptive clipping), once resolved by :meth:`for_round_size`."""
        if self.clip_count_stddev is None:
            raise ConfigError("privacy clip_count_stddev is not resolved: build the strategy with with_privacy")
        return float(self.clip_count_stddev)

    def for_round_size(self, selected: int) -> PrivacySettings:
        """These settings with adaptive clipping's default σ_b = m/20 (Andrew et al. 2021: the
        noised unclipped *fraction* then has standard deviation 0.05) for m = ``selected``."""
        if not self.adaptive_clip or self.clip_count_stddev is not None:
            return self
        return replace(self, clip_count_stddev=selected / 20.0)

    def check_population(self, num_clients: int) -> None:
        """δ ≥ 1/K would be met by publishing one random client's data: refused."""
        assert self.delta is not None
        if self.delta >= 1.0 / num_clients:
            raise ConfigError(
                f"privacy delta={self.delta} is not below 1/number of clients = 1/{num_clients}: a mechanism "
                "that publishes one client's data in the clear meets it; set delta (--dp-delta) below "
                f"{1.0 / num_clients:.3g}, e.g. {min(1e-5, 0.1 / num_clients):.3g}"
            )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready copy (stored with the run's strategy)."""
        return asdict(self)


_FLOATS = (
    "noise_multiplier", "clip_norm", "delta", "target_quantile", "clip_lr", "clip_count_stddev", "target_epsilon",
)  # fmt: skip
_TYPES: dict[str, type] = {**dict.fromkeys(_FLOATS, float), "mode": str, "accountant": str, "adaptive_clip": bool}
_TYPES["noise_seed"] = int


def _typed(key: str, value: Any) -> Any:
    """A TOML/flag value checked against the field's type (an int is a fine float)."""
    kind = _TYPES[key]
    if value is None or (kind is float and isinstance(value, int) and not isinstance(value, bool)):
        return None if value is None else float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"privacy setting {key!r} must be {kind.__name__}, got {value!r}")
    return value


def privacy_from_mapping(values: dict[str, Any]) -> PrivacySettings:
    """``PrivacySettings`` from a TOML table or flag dict; unknown keys are errors naming the known ones."""
    unknown = sorted(set(values) - set(_TYPES))
    if unknown:
        raise ConfigError(f"unknown privacy setting {unknown[0]!r}; known: {', '.join(sorted(_TYPES))}")
    return PrivacySettings(**{key: _typed(key, value) for key, value in values.items()})
