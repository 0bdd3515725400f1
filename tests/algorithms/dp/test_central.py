"""DP-FedAvg's server part against its formulas: clip, uniform sum, N(0,(zC)²), fixed m."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.algorithms.dp import PrivacySettings, with_privacy
from fedloom.algorithms.dp.central import PrivateMean, PrivateSumAccumulator
from fedloom.algorithms.privacy_accountant import WithoutReplacement, gaussian_epsilon
from fedloom.algorithms.registry import build_strategy
from fedloom.core.update import ClientUpdate

pytest.importorskip("dp_accounting")


def _bn_model(size: int = 4) -> dict[str, np.ndarray]:
    """A BatchNorm-shaped model: float32 weights, float64 buffer, 0-d int64 counter, 0-d float."""
    return {
        "conv.weight": np.zeros((size, 2), np.float32),
        "bn.running_mean": np.zeros(size, np.float64),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "temperature": np.array(1.0, np.float32),
    }


def _update(client: str, weights: dict[str, np.ndarray], num_samples: int = 10) -> ClientUpdate:
    return ClientUpdate(client_id=client, round=1, weights=weights, num_samples=num_samples)


def _aggregator(**changes: object) -> PrivateMean:
    settings = PrivacySettings(**{"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5, **changes})  # type: ignore[arg-type]
    strategy = with_privacy(build_strategy("fedavg", fraction=0.5), settings, 8)
    assert isinstance(strategy.aggregator, PrivateMean)
    return strategy.aggregator


def _moved(value: float) -> dict[str, np.ndarray]:
    model = _bn_model()
    model["conv.weight"] = np.full((4, 2), value, np.float32)
    model["bn.num_batches_tracked"] = np.array(99, np.int64)
    return model


def test_denominator_is_the_number_selected_not_the_number_delivered() -> None:
    # noise_multiplier tiny: the mean is visible; 2 of the 4 selected clients deliver
    acc = _aggregator(noise_multiplier=1e-9, clip_norm=100.0, noise_seed=1).start_sized(_bn_model(), 8)
    acc.add(_update("a", _moved(1.0), num_samples=1))
    acc.add(_update("b", _moved(3.0), num_samples=1000))  # uniform weight: samples do not count
    out = acc.result()
    assert out["conv.weight"] == pytest.approx(np.full((4, 2), (1.0 + 3.0) / 4))


def test_each_update_is_clipped_before_the_sum() -> None:
    acc = _aggregator(noise_multiplier=1e-9, clip_norm=2.0, noise_seed=1).start_sized(_bn_model(), 8)
    acc.add(_update("a", _moved(10.0)))  # ‖Δ‖ = 10·√8, clipped to 2
    out = acc.result()
    direction = np.full((4, 2), 1.0) / np.sqrt(8)
    assert out["conv.weight"] == pytest.approx(2.0 * direction / 4, rel=1e-6)
    assert acc.round_metrics()["privacy/clipped_fraction"] == 1.0


def test_integer_tensors_keep_the_global_value_and_every_dtype_and_shape_survives() -> None:
    acc = _aggregator(noise_seed=3).start_sized(_bn_model(), 8)
    acc.add(_update("a", _moved(0.1)))
    out = acc.result()
    reference = _bn_model()
    assert int(out["bn.num_batches_tracked"]) == 7  # not the clients' 99
    for name, value in reference.items():
        assert out[name].dtype == value.dtype and out[name].shape == value.shape, name


def test_noise_standard_deviation_is_z_times_c_over_m() -> None:
    z, clip, selected = 2.0, 0.5, 4
    model = {"w": np.zeros(200_000, np.float64)}
    acc = _aggregator(noise_multiplier=z, clip_norm=clip, noise_seed=11).start_sized(model, 8)
    acc.add(_update("a", {"w": np.zeros(200_000)}))  # a zero update: the result is the noise alone
    noise = acc.result()["w"]
    assert noise.mean() == pytest.approx(0.0, abs=5e-3 * z * clip / selected)
    assert noise.std() == pytest.approx(z * clip / selected, rel=0.01)


def test_noise_is_fresh_without_a_noise_seed_and_reproducible_with_one() -> None:
    model = {"w": np.zeros(16)}

    def noise(**changes: object) -> np.ndarray:
        acc = _aggregator(**changes).start_sized(model, 8)
        acc.add(_update("a", {"w": np.zeros(16)}))
        return acc.result()["w"]

    assert not np.array_equal(noise(), noise())
    assert np.array_equal(noise(noise_seed=5), noise(noise_seed=5))


def test_round_metrics_report_the_accountant_epsilon_of_each_round() -> None:
    aggregator = _aggregator(noise_multiplier=1.3)
    aggregator.begin_run(0)
    for round_no in (1, 2, 3):
        acc = aggregator.start_sized({"w": np.zeros(3)}, 8)
        assert isinstance(acc, PrivateSumAccumulator)
        acc.add(_update("a", {"w": np.ones(3)}))
        acc.result()
        metrics = acc.round_metrics()
        # replace-one: the clipped sum's sensitivity is 2C, so noise z·C is multiplier z/2
        expected = gaussian_epsilon(1.3 / 2, WithoutReplacement(8, 4), round_no, 1e-5)
        assert metrics["privacy/epsilon"] == expected
        # who was selected is stored (and follows from the run's seed): ε without amplification too
        unsampled = gaussian_epsilon(1.3 / 2, WithoutReplacement(1, 1), round_no, 1e-5)
        assert metrics["privacy/epsilon_without_sampling"] == unsampled > expected
        assert metrics["privacy/delta"] == 1e-5 and metrics["privacy/clip_norm"] == 1.0
        assert metrics["privacy/noise_multiplier"] == 1.3


def test_seeded_noise_is_recorded_as_reproducible() -> None:
    acc = _aggregator(noise_seed=1).start_sized({"w": np.zeros(2)}, 8)
    acc.add(_update("a", {"w": np.ones(2)}))
    acc.result()
    assert acc.round_metrics()["privacy/noise_reproducible"] == 1.0
    plain = _aggregator().start_sized({"w": np.zeros(2)}, 8)
    plain.add(_update("a", {"w": np.ones(2)}))
    plain.result()
    assert "privacy/noise_reproducible" not in plain.round_metrics()


def test_adaptive_clip_moves_by_the_noised_unclipped_fraction_and_lowers_update_noise() -> None:
    aggregator = _aggregator(
        noise_multiplier=1e-6, adaptive_clip=True, clip_count_stddev=1e-6, clip_lr=0.2, target_quantile=0.5
    )
    acc = aggregator.start_sized({"w": np.zeros(2)}, 8)
    for client in "abcd":  # all four unclipped (‖Δ‖ = 0.1 < 1): b̄ = 1
        acc.add(_update(client, {"w": np.array([0.1, 0.0])}))
    acc.result()
    assert aggregator.ledger.clip_norm == pytest.approx(np.exp(-0.2 * (1.0 - 0.5)))
    assert acc.round_metrics()["privacy/clip_norm"] == 1.0  # the clip this round used
    assert acc.round_metrics()["privacy/clipped_fraction"] == pytest.approx(0.0, abs=1e-6)
    following = aggregator.start_sized({"w": np.zeros(2)}, 8)
    following.add(_update("a", {"w": np.array([0.1, 0.0])}))
    following.result()
    assert following.round_metrics()["privacy/clip_norm"] == pytest.approx(np.exp(-0.1))


def test_adaptive_clipping_noises_the_updates_with_the_corrected_multiplier() -> None:
    z, sigma_b, clip = 1.0, 0.8, 0.5
    z_delta = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    model = {"w": np.zeros(200_000)}
    aggregator = _aggregator(noise_multiplier=z, clip_norm=clip, adaptive_clip=True, clip_count_stddev=sigma_b)
    acc = aggregator.start_sized(model, 8)
    acc.add(_update("a", {"w": np.zeros(200_000)}))
    noise = acc.result()["w"]
    assert noise.std() == pytest.approx(z_delta * clip / 4, rel=0.01)
    assert z_delta * clip / 4 > 1.05 * z * clip / 4  # visibly more than without the count's share


def test_a_client_mode_update_that_would_overflow_the_sum_is_refused_and_changes_nothing() -> None:
    from fedloom.core.errors import NonFiniteError

    acc = _aggregator(mode="client").start_sized({"w": np.zeros(2)}, 8)
    acc.add(_update("a", {"w": np.array([1e308, 0.0])}))
    with pytest.raises(NonFiniteError, match="the DP sum"):
        acc.add(_update("b", {"w": np.array([1e308, 0.0])}))
    assert acc.count == 1
    assert acc.result()["w"][0] == pytest.approx(1e308 / 4)
