"""DP-FedAvg's server part: clip each update, sum with uniform weight, noise, divide by m.

Per accepted update ``Δ = w − g`` (float tensors) is clipped to C (central mode; in client
and local modes the clients clipped and noised it themselves), summed with weight 1 (a
sample-count weight would let one client's influence grow with the size it claims), and at
the round's end ``N(0, (z_Δ·C)²)`` is added to every coordinate of the sum (central mode
only) and the sum is divided by the FIXED denominator m, the number of clients the round
selects: so one client moves the model by at most C/m whoever else delivered (dividing by
the number that arrived would make the sensitivity depend on the others). Local mode, where
every update is already private on its own, averages what arrived.

Integer and bool tensors (BatchNorm's ``num_batches_tracked``, step counters) are not
released from clients at all: the new global model keeps the global model's values, since
averaging them would publish a statistic of the clients' data without noise.

The noise comes from fresh OS entropy, never from the run's stored seed (anyone holding the
database could regenerate and subtract it); ``noise_seed`` is for tests and gives no privacy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedloom.algorithms.casting import cast_like
from fedloom.algorithms.dp import adaptive
from fedloom.algorithms.dp.clipping import clip_delta, update_delta
from fedloom.algorithms.dp.ledger import PrivacyLedger
from fedloom.algorithms.dp.settings import PrivacySettings
from fedloom.algorithms.mean import require_finite
from fedloom.algorithms.sampling import ClientSampler
from fedloom.core.errors import ValidationError
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, check_compatible


def noise_generator(settings: PrivacySettings, round_index: int) -> np.random.Generator:
    """The round's noise source: OS entropy, or (tests only) a generator from ``noise_seed``."""
    if settings.noise_seed is None:
        return np.random.default_rng(np.random.SeedSequence())
    return np.random.default_rng([settings.noise_seed, round_index])


class PrivateSumAccumulator:
    """One round of DP-FedAvg (see the module docstring); reports its privacy metrics."""

    def __init__(
        self, reference: Mapping[str, np.ndarray], ledger: PrivacyLedger, population: int, selected: int
    ) -> None:
        self._reference = {k: np.asarray(v) for k, v in reference.items()}
        self._ledger, self._population, self._selected = ledger, population, selected
        self._clip = ledger.clip_norm
        zero = update_delta(self._reference, self._reference)
        self._sums = {k: np.zeros(v.shape, np.float64) for k, v in zero.items()}
        self._senders: list[str] = []
        self._unclipped = 0
        self._metrics: dict[str, float] = {}
        self.count = 0

    @property
    def settings(self) -> PrivacySettings:
        return self._ledger.settings

    def add(self, update: ClientUpdate) -> None:
        check_compatible(update.weights, self._reference)
        delta = update_delta(update.weights, self._reference)
        if self.settings.mode == "central":
            delta, norm = clip_delta(delta, self._clip)
            self._unclipped += int(norm <= self._clip)
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            sums = {k: total + delta[k] for k, total in self._sums.items()}
        require_finite(sums, "the DP sum")  # only unclipped (client/local mode) updates can get here
        self._sums = sums
        self._senders.append(update.client_id)
        self.count += 1

    def add_secure_sum(self, delta_sum: Mapping[str, np.ndarray], senders: Sequence[str]) -> None:
        """Fold in the unmasked sum of ``senders``' updates (secure aggregation). Only in client and
        local modes: their clients clipped and noised their own updates, so the sum is all the
        server needs; integer tensors in ``delta_sum`` are ignored as for single updates."""
        if self.settings.mode == "central":
            raise ValidationError("central DP clips each update on the server; a secure sum hides them")
        with np.errstate(over="ignore"):
            sums = {k: total + np.asarray(delta_sum[k], np.float64) for k, total in self._sums.items()}
        require_finite(sums, "the DP sum")
        self._sums = sums
        self._senders.extend(senders)
        self.count += len(senders)

    def _noise_std(self) -> float:
        settings = self.settings
        if settings.mode != "central":
            return 0.0  # the clients added it
        assert settings.noise_multiplier is not None
        z = float(settings.noise_multiplier)
        if settings.adaptive_clip:
            z = adaptive.update_noise_multiplier(z, settings.count_stddev)
        return z * self._clip

    def result(self) -> Weights:
        if not self.count:
            raise ValidationError("cannot aggregate: no updates were added")
        rng = noise_generator(self.settings, len(self._ledger.steps) + self._ledger.unsampled_rounds)
        std = self._noise_std()
        denominator = self.count if self.settings.mode == "local" else self._selected
        out: Weights = {}
        for name in sorted(self._reference):  # name order: a model read back from a payload may be ordered otherwise
            ref = self._reference[name]
            if name not in self._sums:
                out[name] = np.array(ref, copy=True)  # counters keep the global model's value
                continue
            noisy = self._sums[name] + (rng.normal(0.0, std, ref.shape) if std else 0.0)
            out[name] = cast_like(ref.astype(np.float64) + noisy / denominator, ref)
        self._close(rng)
        return {name: out[name] for name in self._reference}  # the model's own order

    def _close(self, rng: np.random.Generator) -> None:
        """Record the round in the ledger, move an adaptive clip, and keep the round's metrics."""
        ledger, settings = self._ledger, self.settings
        clipped = 1.0 - self._unclipped / self.count if settings.mode == "central" else float("nan")
        if settings.adaptive_clip:
            fraction = adaptive.noised_unclipped_fraction(self._unclipped, self._selected, settings.count_stddev, rng)
            clipped = 1.0 - fraction  # the noised estimate: the exact count is not released
            ledger.clip_norm = adaptive.next_clip_norm(self._clip, fraction, settings.target_quantile, settings.clip_lr)
        ledger.record(self._population, self._selected, self._senders)
        self._metrics = privacy_metrics(ledger, self._clip, clipped)
        target = settings.target_epsilon
        if target is not None and ledger.epsilon_after_next(self._population, self._selected) > target:
            self._metrics[TARGET_REACHED] = 1.0

    def round_metrics(self) -> dict[str, float]:
        """The round's ``privacy/*`` server metrics (after :meth:`result`)."""
        return dict(self._metrics)

    @property
    def ends_run(self) -> bool:
        """Whether the next round would spend more than ``target_epsilon``: the run ends here."""
        return self._metrics.get(TARGET_REACHED, 0.0) > 0


#: every metric DP records starts with this (stored as the round's server metrics)
PRIVACY_PREFIX = "privacy/"
#: set (1.0) on the last round of a run stopped because the next round would exceed target_epsilon
TARGET_REACHED = "privacy/target_epsilon_reached"


def privacy_metrics(ledger: PrivacyLedger, clip_norm: float, clipped_fraction: float) -> dict[str, float]:
    """What each closed round stores as server metrics (NaN values are left out)."""
    settings = ledger.settings
    assert settings.delta is not None and settings.noise_multiplier is not None
    values = {
        "privacy/epsilon": ledger.epsilon(),
        "privacy/epsilon_without_sampling": ledger.epsilon_without_sampling(),
        "privacy/delta": float(settings.delta),
        "privacy/noise_multiplier": float(settings.noise_multiplier),
        "privacy/clip_norm": float(clip_norm),
        "privacy/clipped_fraction": clipped_fraction,
    }
    if settings.target_epsilon is not None:
        values["privacy/target_epsilon"] = float(settings.target_epsilon)
    if settings.noise_seed is not None:
        values["privacy/noise_reproducible"] = 1.0
    return {k: v for k, v in values.items() if not math.isnan(v)}


@dataclass(frozen=True)
class PrivateMean:
    """The DP aggregator: a sized aggregator (it needs K to know m = the sampler's draw of K).

    It holds the run's :class:`PrivacyLedger`; the round engine resets it when a run starts
    (:meth:`begin_run`), so a ledger never carries over from an earlier run.
    """

    settings: PrivacySettings
    sampler: ClientSampler
    ledger: PrivacyLedger = field(compare=False, repr=False)
    name: str = "dp_mean"
    mergeable: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "privacy": self.settings.describe()}

    def begin_run(self, rounds_done: int) -> None:
        self.ledger.begin_run(rounds_done)

    @property
    def takes_secure_sum(self) -> bool:
        """Client and local modes compose with secure aggregation; central mode clips each update itself."""
        return self.settings.mode != "central"

    def start(self, reference: Mapping[str, np.ndarray]) -> PrivateSumAccumulator:
        raise ValidationError("the DP aggregator needs the number of clients: start it with start_sized")

    def start_sized(self, reference: Mapping[str, np.ndarray], num_clients: int) -> PrivateSumAccumulator:
        selected = self.sampler.num_to_sample(num_clients)
        self.ledger.round_size = selected  # what the round's fit configs tell clients (PrivateClientSettings)
        return PrivateSumAccumulator(reference, self.ledger, num_clients, selected)
