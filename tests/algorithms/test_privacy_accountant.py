"""The accountant against closed forms: the Gaussian mechanism without sampling has an exact
(ε, δ) curve (Balle & Wang 2018), and subsampling can only lower ε."""

from __future__ import annotations

import math

import pytest

from fedloom.algorithms.privacy_accountant import Poisson, WithoutReplacement, gaussian_epsilon
from fedloom.core.errors import ConfigError

pytest.importorskip("dp_accounting")


def _exact_delta(epsilon: float, mu: float) -> float:
    """δ(ε) of a Gaussian mechanism with sensitivity/σ = μ (analytic Gaussian mechanism)."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    return phi(-epsilon / mu + mu / 2) - math.exp(epsilon) * phi(-epsilon / mu - mu / 2)


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (2.0, 10), (5.0, 100)])
def test_unsampled_gaussian_matches_the_exact_curve(sigma: float, steps: int) -> None:
    delta = 1e-5
    epsilon = gaussian_epsilon(sigma, Poisson(1.0), steps, delta, accountant="pld")
    mu = math.sqrt(steps) / sigma
    # the ε the library reports must give (about) the δ asked for on the exact curve
    assert _exact_delta(epsilon, mu) == pytest.approx(delta, rel=0.05)


def test_rdp_is_an_upper_bound_of_the_exact_curve() -> None:
    epsilon = gaussian_epsilon(2.0, Poisson(1.0), 10, 1e-5, accountant="rdp")
    exact = gaussian_epsilon(2.0, Poisson(1.0), 10, 1e-5, accountant="pld")
    assert exact <= epsilon <= 1.5 * exact


def test_sampling_lowers_epsilon_and_steps_raise_it() -> None:
    full = gaussian_epsilon(1.0, WithoutReplacement(100, 100), 50, 1e-5)
    sampled = gaussian_epsilon(1.0, WithoutReplacement(100, 10), 50, 1e-5)
    longer = gaussian_epsilon(1.0, WithoutReplacement(100, 10), 100, 1e-5)
    assert sampled < full
    assert sampled < longer
    assert gaussian_epsilon(1.0, Poisson(0.1), 0, 1e-5) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"steps": -1}, "steps"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_bad_parameters_are_refused_by_name(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"noise_multiplier": 1.0, "sampling": Poisson(0.1), "steps": 10, "delta": 1e-5}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field if field != "accountant" else "unknown accountant"):
        gaussian_epsilon(**args)  # type: ignore[arg-type]


def test_bad_sampling_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample_size"):
        WithoutReplacement(10, 11)
    with pytest.raises(ConfigError, match="rate"):
        Poisson(0.0)
