"""Configurations that cannot give the privacy they claim are refused, each by its field."""

from __future__ import annotations

import re

import pytest

from fedloom.algorithms.dp import PrivacySettings, with_privacy
from fedloom.algorithms.dp.settings import privacy_from_mapping
from fedloom.algorithms.registry import build_strategy
from fedloom.core.errors import ConfigError

GOOD = {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"clip_norm": None}, "clip_norm"),  # noise without clipping
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": None}, "noise_multiplier"),
        ({"delta": None}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"mode": "shuffle"}, "mode"),
        ({"accountant": "moments"}, "accountant"),
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"adaptive_clip": True, "clip_count_stddev": 0.4}, "clip_count_stddev"),
        ({"adaptive_clip": True, "target_quantile": 1.0}, "target_quantile"),
        ({"adaptive_clip": True, "mode": "client"}, "adaptive_clip"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PrivacySettings(**{**GOOD, **changes})  # type: ignore[arg-type]


def test_delta_at_least_one_over_the_population_is_refused() -> None:
    settings = PrivacySettings(**{**GOOD, "delta": 0.01})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("delta=0.01 is not below 1/number of clients = 1/100")):
        with_privacy(build_strategy("fedavg"), settings, 100)
    with_privacy(build_strategy("fedavg"), settings, 50)  # 0.01 < 1/50 is accepted


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"name": "fednova"}, "not bounded by the clip norm"),
        ({"name": "qfedavg"}, "not bounded by the clip norm"),
        ({"name": "median"}, "not bounded by the clip norm"),
        ({"name": "krum"}, "not bounded by the clip norm"),
        ({"name": "scaffold"}, "reserved tensors"),
        ({"name": "fedcurv"}, "reserved tensors"),
        ({"name": "fedavg", "params": {"filter_max_distance": 3.0}}, "update filter"),
        ({"name": "fedavg", "params": {"personal_keys": "bn.*"}}, "personal_keys"),
    ],
)
def test_strategies_without_bounded_influence_are_refused(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        with_privacy(build_strategy(**kwargs), PrivacySettings(**GOOD), 100)  # type: ignore[arg-type]


def test_server_optimiser_is_allowed_as_post_processing() -> None:
    strategy = with_privacy(build_strategy("fedadam"), PrivacySettings(**GOOD), 100)  # type: ignore[arg-type]
    assert strategy.aggregator.name == "dp_mean" and strategy.server_opt is not None


def test_unreachable_target_epsilon_is_refused_before_the_run() -> None:
    settings = PrivacySettings(**{**GOOD, "noise_multiplier": 0.3, "target_epsilon": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("target_epsilon=0.5 cannot be met even for one round")):
        with_privacy(build_strategy("fedavg", fraction=0.5), settings, 20)


def test_mapping_with_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown privacy setting 'noise'"):
        privacy_from_mapping({"noise": 1.0})


def test_an_accountant_that_cannot_account_for_the_sampling_is_refused_before_the_run() -> None:
    settings = PrivacySettings(**{**GOOD, "accountant": "pld"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pld accountant cannot account for WithoutReplacement"):
        with_privacy(build_strategy("fedavg", fraction=0.5), settings, 20)
    with_privacy(build_strategy("fedavg", fraction=1.0), settings, 20)  # everyone each round: no sampling


def test_adaptive_count_noise_defaults_to_m_over_20_and_too_few_clients_are_refused() -> None:
    settings = PrivacySettings(**{**GOOD, "adaptive_clip": True})  # type: ignore[arg-type]
    strategy = with_privacy(build_strategy("fedavg", fraction=0.5), settings, 100)
    assert strategy.aggregator.settings.clip_count_stddev == 50 / 20  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=re.escape("clip_count_stddev=0.25 leaves no noise for the updates")):
        with_privacy(build_strategy("fedavg", fraction=0.5), settings, 10)  # m = 5: σ_b = 0.25 <= z/2
