"""The privacy accountant: (ε, δ) of a Gaussian mechanism repeated under subsampling.

fedloom does not do its own privacy maths. Every ε it stores or shows comes from Google's
``dp-accounting`` library (the ``dp`` extra), composed for the sampling a run actually
uses: a fixed number of clients drawn without replacement each round (fedloom's
``ClientSampler``; user-level DP, replace-one neighbours) or Poisson sampling of examples
(DP-SGD's batches; sample-level DP, add/remove neighbours). Getting the sampling wrong is
the commonest way to report a smaller ε than a run earned, so the sampling is a required,
explicit argument rather than a default.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedloom.core.errors import ConfigError

ACCOUNTANTS = ("rdp", "pld")


@dataclass(frozen=True)
class WithoutReplacement:
    """``sample_size`` of ``population`` drawn uniformly without replacement per step."""

    population: int
    sample_size: int

    def __post_init__(self) -> None:
        if self.population < 1 or not 1 <= self.sample_size <= self.population:
            raise ConfigError(
                f"sampling without replacement needs 1 <= sample_size <= population, got "
                f"sample_size={self.sample_size}, population={self.population}"
            )


@dataclass(frozen=True)
class Poisson:
    """Each record taken independently with probability ``rate`` per step."""

    rate: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and 0.0 < self.rate <= 1.0):
            raise ConfigError(f"the Poisson sampling rate must be in (0, 1], got {self.rate}")


Sampling = WithoutReplacement | Poisson


def _library() -> Any:
    try:
        import dp_accounting
    except ImportError:
        raise ConfigError(
            "differential privacy needs Google's dp-accounting library, which is not installed: "
            "run `pip install 'fedloom[dp]'`"
        ) from None
    _unbind_absl_stderr()
    return dp_accounting


def _unbind_absl_stderr() -> None:
    """dp-accounting imports ``absl.logging``, whose (unattached) handler keeps the ``sys.stderr``
    of that moment. A later ``logging.config.dictConfig`` (uvicorn's, when a server starts) closes
    every handler there is, and with it that stream unless it is the current ``sys.stderr``: under
    a redirected stderr (pytest's capture, a daemon's log file) the wrong file is closed. Pointed
    at ``sys.__stderr__``, which absl never closes; a handler the application attached is left."""
    absl_logging = sys.modules.get("absl.logging")
    get_handler = getattr(absl_logging, "get_absl_handler", None)
    if get_handler is None:
        return
    handler = get_handler()
    if handler not in logging.root.handlers and handler.python_handler.stream is not sys.__stderr__:
        handler.python_handler.stream = sys.__stderr__


def _check(noise_multiplier: float, steps: int, delta: float, accountant: str) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not (math.isfinite(delta) and 0.0 < delta < 1.0):
        raise ConfigError(f"delta must be in (0, 1), got {delta}: set dp_delta, e.g. below 1/number of clients")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}: choose one of {', '.join(ACCOUNTANTS)}")


def _event(dpa: Any, noise_multiplier: float, sampling: Sampling) -> Any:
    gaussian = dpa.GaussianDpEvent(noise_multiplier)
    if isinstance(sampling, Poisson):
        return gaussian if sampling.rate == 1.0 else dpa.PoissonSampledDpEvent(sampling.rate, gaussian)
    if sampling.sample_size == sampling.population:
        return gaussian
    return dpa.SampledWithoutReplacementDpEvent(sampling.population, sampling.sample_size, gaussian)


def _new_accountant(dpa: Any, sampling: Sampling, accountant: str) -> Any:
    relation = dpa.NeighboringRelation
    neighbours = relation.REPLACE_ONE if isinstance(sampling, WithoutReplacement) else relation.ADD_OR_REMOVE_ONE
    if accountant == "pld":
        return dpa.pld.PLDAccountant(neighbours)
    return dpa.rdp.RdpAccountant(neighboring_relation=neighbours)


def gaussian_epsilon(
    noise_multiplier: float, sampling: Sampling, steps: int, delta: float, *, accountant: str = "rdp"
) -> float:
    """ε after ``steps`` compositions of the subsampled Gaussian mechanism, at ``delta``.

    ``noise_multiplier`` is σ/C (the noise standard deviation over the clipping norm).
    Zero steps spend nothing (ε = 0)."""
    _check(noise_multiplier, steps, delta, accountant)
    if steps == 0:
        return 0.0
    dpa = _library()
    tracker = _new_accountant(dpa, sampling, accountant)
    if not tracker.supports(_event(dpa, noise_multiplier, sampling)):
        raise ConfigError(f"the {accountant} accountant cannot account for {sampling}: use accountant='rdp'")
    tracker.compose(_event(dpa, noise_multiplier, sampling), steps)
    return float(tracker.get_epsilon(delta))


#: one entry of a composition: (noise multiplier, sampling, how many steps of it)
Step = tuple[float, Sampling, int]


def composed_epsilon(steps: Sequence[Step], delta: float, *, accountant: str = "rdp") -> float:
    """ε after the sequence ``steps`` of subsampled Gaussian mechanisms, composed in one accountant.

    For runs whose rounds differ (a deployed federation whose size changes, rounds with
    fewer noise shares): each entry is composed as it was used. All entries must share one
    neighbouring relation (all :class:`WithoutReplacement`, or all :class:`Poisson`).

    With RDP, composition is the sum of each event's RDP curve times its count, so each
    distinct event's curve is computed once per process (:func:`_event_rdp`, the library's
    ``RdpAccountant.rdp``) and the sum goes to the library's ``compute_epsilon``: the same
    numbers as composing them one by one (a sampled-without-replacement curve takes ~1 s;
    recomputing a run's whole history after every round would grow with the run)."""
    kinds = {type(sampling) for _, sampling, _ in steps}
    if len(kinds) > 1:
        raise ConfigError("cannot compose WithoutReplacement (replace-one) with Poisson (add/remove) steps")
    for multiplier, _, count in steps:
        _check(multiplier, count, delta, accountant)
    live = [(m, s, n) for m, s, n in steps if n > 0]
    if not live:
        return 0.0
    if accountant == "rdp":
        counts: dict[tuple[float, Sampling], int] = {}
        for multiplier, sampling, count in live:  # equal events grouped: r·curve, as composing r times
            key = (float(multiplier), sampling)
            counts[key] = counts.get(key, 0) + count
        total = sum(count * _event_rdp(*key) for key, count in counts.items())
        return float(_library().rdp.rdp_privacy_accountant.compute_epsilon(_rdp_orders(), total, delta)[0])
    dpa = _library()
    tracker = _new_accountant(dpa, live[0][1], accountant)
    for multiplier, sampling, count in live:
        event = _event(dpa, multiplier, sampling)
        if not tracker.supports(event):
            raise ConfigError(f"the {accountant} accountant cannot account for {sampling}: use accountant='rdp'")
        tracker.compose(event, count)
    return float(tracker.get_epsilon(delta))


@functools.lru_cache(maxsize=1)
def _rdp_orders() -> Any:
    dpa = _library()
    return dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE).orders


@functools.lru_cache(maxsize=256)
def _event_rdp(noise_multiplier: float, sampling: Sampling) -> Any:
    """The RDP curve (at the library's default orders) of one subsampled Gaussian event."""
    dpa = _library()
    tracker = _new_accountant(dpa, sampling, "rdp")
    event = _event(dpa, noise_multiplier, sampling)
    if not tracker.supports(event):
        raise ConfigError(f"the rdp accountant cannot account for {sampling}")
    tracker.compose(event, 1)
    return tracker.rdp
