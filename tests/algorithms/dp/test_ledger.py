"""The privacy ledger composes exactly what each round released, through the accountant."""

from __future__ import annotations

import pytest

from fedloom.algorithms.dp import PrivacySettings
from fedloom.algorithms.dp.ledger import PrivacyLedger
from fedloom.algorithms.privacy_accountant import Poisson, WithoutReplacement, composed_epsilon, gaussian_epsilon
from fedloom.core.errors import ConfigError

pytest.importorskip("dp_accounting")


def _ledger(mode: str = "central") -> PrivacyLedger:
    return PrivacyLedger(PrivacySettings(mode=mode, noise_multiplier=2.0, clip_norm=1.0, delta=1e-5))


def test_composed_steps_equal_the_single_call_for_one_kind_of_step() -> None:
    sampling = WithoutReplacement(100, 10)
    assert composed_epsilon([(1.0, sampling, 30)], 1e-5) == gaussian_epsilon(1.0, sampling, 30, 1e-5)
    split = composed_epsilon([(1.0, sampling, 10), (1.0, sampling, 20)], 1e-5)
    assert split == pytest.approx(gaussian_epsilon(1.0, sampling, 30, 1e-5), rel=1e-9)
    with pytest.raises(ConfigError, match="cannot compose"):
        composed_epsilon([(1.0, sampling, 1), (1.0, Poisson(0.1), 1)], 1e-5)


def test_rounds_of_a_changing_federation_are_composed_as_they_were() -> None:
    ledger = _ledger()
    ledger.record(50, 5, ["a"])
    ledger.record(100, 10, ["b"])
    expected = composed_epsilon([(1.0, WithoutReplacement(50, 5), 1), (1.0, WithoutReplacement(100, 10), 1)], 1e-5)
    assert ledger.epsilon() == expected
    assert ledger.epsilon_after_next(100, 10) > expected


def test_client_mode_round_with_missing_shares_is_accounted_with_less_noise() -> None:
    ledger = _ledger("client")
    ledger.record(40, 4, ["a", "b"])  # 2 of the 4 noise shares arrived: std z·C·√(2/4)
    assert ledger.epsilon() == gaussian_epsilon(1.0 * (2 / 4) ** 0.5, WithoutReplacement(40, 4), 1, 1e-5)


def test_local_mode_reports_the_worst_client_without_sampling() -> None:
    ledger = _ledger("local")
    for senders in (["a", "b"], ["a"], ["a", "c"]):
        ledger.record(10, 2, senders)
    assert ledger.epsilon() == gaussian_epsilon(1.0, WithoutReplacement(1, 1), 3, 1e-5)  # client a, 3 rounds


def test_a_restarted_ledger_counts_earlier_rounds_without_sampling_amplification() -> None:
    ledger = _ledger()
    ledger.begin_run(2)
    ledger.record(100, 10, ["a"])
    expected = composed_epsilon([(1.0, WithoutReplacement(1, 1), 2), (1.0, WithoutReplacement(100, 10), 1)], 1e-5)
    assert ledger.epsilon() == expected
    assert ledger.epsilon() > gaussian_epsilon(1.0, WithoutReplacement(100, 10), 3, 1e-5)


def test_cached_composition_equals_the_library_composing_event_by_event() -> None:
    import dp_accounting as dpa

    a, b = WithoutReplacement(50, 5), WithoutReplacement(80, 8)
    steps = [(0.8, a, 3), (1.2, b, 2), (0.8, a, 1)]
    reference = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    for multiplier, sampling, count in steps:
        event = dpa.SampledWithoutReplacementDpEvent(
            sampling.population, sampling.sample_size, dpa.GaussianDpEvent(multiplier)
        )
        reference.compose(event, count)
    assert composed_epsilon(steps, 1e-5) == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
