import numpy as np
import pytest

from fedloom.algorithms import ClientSampler, WeightedMeanAccumulator, weighted_mean
from fedloom.core import ClientUpdate, ConfigError, ValidationError

REF = {"w": np.zeros(2, np.float32), "n": np.array(0, np.int64)}


def update(cid, w, n, steps=0):
    return ClientUpdate(cid, 1, {"w": np.array(w, np.float32), "n": np.array(steps, np.int64)}, n)


def test_weighted_mean_equals_mcmahan_formula():
    updates = [update("a", [1, 2], 10), update("b", [3, 6], 30), update("c", [-1, 0], 60)]
    got = weighted_mean(updates, REF)
    expected = (10 * np.array([1, 2]) + 30 * np.array([3, 6]) + 60 * np.array([-1, 0])) / 100
    np.testing.assert_allclose(got["w"], expected.astype(np.float32), rtol=0, atol=1e-7)
    assert got["w"].dtype == np.float32
    assert got["w"].tolist() == pytest.approx([0.4, 2.0])


def test_integer_tensors_are_rounded_means():
    got = weighted_mean([update("a", [0, 0], 1, steps=3), update("b", [0, 0], 1, steps=4)], REF)
    assert got["n"].dtype == np.int64 and int(got["n"]) == 4  # rint(3.5) = 4 (banker's rounding to even)


def test_merging_partials_equals_adding_everything():
    rng = np.random.default_rng(1)
    ups = [update(str(i), rng.normal(size=2), int(rng.integers(1, 100))) for i in range(9)]
    whole = WeightedMeanAccumulator(REF)
    for u in ups:
        whole.add(u)
    parts = [WeightedMeanAccumulator(REF) for _ in range(3)]
    for i, u in enumerate(ups):
        parts[i % 3].add(u)
    merged = WeightedMeanAccumulator(REF)
    for p in parts:
        sums, total, count = p.partial_sums()
        merged.merge(WeightedMeanAccumulator.from_partial_sums(REF, sums, total, count))
    assert merged.count == 9 and merged.total_weight == whole.total_weight
    np.testing.assert_allclose(merged.result()["w"], whole.result()["w"], rtol=1e-6)


def test_accumulator_errors():
    acc = WeightedMeanAccumulator(REF)
    with pytest.raises(ValidationError, match="no updates"):
        acc.result()
    with pytest.raises(ValidationError, match="weight must be > 0"):
        acc.add_weights({"w": np.zeros(2, np.float32), "n": np.array(0)}, 0)
    with pytest.raises(ValidationError, match="shape"):
        acc.add_weights({"w": np.zeros(3, np.float32), "n": np.array(0, np.int64)}, 1)
    with pytest.raises(ValidationError, match="different models"):
        acc.merge(WeightedMeanAccumulator({"x": np.zeros(1)}))


def test_sampler_counts_and_reproducibility():
    ids = [str(i) for i in range(100)]
    s = ClientSampler(fraction=0.1, min_clients=2)
    first = s.sample(ids, 1, seed=0)
    assert len(first) == 10 and first == sorted(first)
    assert s.sample(list(reversed(ids)), 1, seed=0) == first  # input order does not matter
    assert s.sample(ids, 2, seed=0) != first
    assert s.sample(ids, 1, seed=1) != first
    assert ClientSampler(0.01, min_clients=3).num_to_sample(100) == 3
    assert ClientSampler(1.0).sample(ids[:5], 9, 0) == ids[:5]
    with pytest.raises(ConfigError, match="min_clients is 3"):
        ClientSampler(0.5, min_clients=3).num_to_sample(2)
    with pytest.raises(ConfigError, match="fraction"):
        ClientSampler(fraction=0)


def test_sampler_is_uniform_over_many_rounds():
    ids = [str(i) for i in range(20)]
    counts = dict.fromkeys(ids, 0)
    s = ClientSampler(fraction=0.25)
    for r in range(2000):
        for c in s.sample(ids, r, seed=0):
            counts[c] += 1
    # each client expected 2000 * 5/20 = 500 times; binomial sd ~ 19
    assert all(420 < v < 580 for v in counts.values())


HUGE = {"m": np.zeros(3, np.float64)}


def huge(cid, value, n):
    return ClientUpdate(cid, 1, {"m": np.full(3, value, np.float64)}, n)


def test_finite_huge_values_with_many_samples_do_not_overflow():
    # the old Σ n·w was 1e300 · 1e9 = Inf: the round could never close
    got = weighted_mean([huge("a", 1e300, 10**9), huge("b", -3e299, 10**9), huge("c", 1.0, 10)], HUGE)
    assert np.isfinite(got["m"]).all()
    np.testing.assert_allclose(got["m"], (1e300 - 3e299) / 2 * (2e9 / (2e9 + 10)), rtol=1e-12)
    top = np.finfo(np.float64).max
    at_the_top = weighted_mean([huge("a", top, 3), huge("b", top, 5)], HUGE)["m"]
    assert np.isfinite(at_the_top).all()  # not Inf, even where rounding would cross the top
    np.testing.assert_allclose(at_the_top, top, rtol=1e-15)
    tiny = weighted_mean([huge("a", 5e-324, 10**12), huge("b", 5e-324, 1)], HUGE)["m"]
    assert (tiny == 5e-324).all()


def test_huge_partial_results_merge_without_overflow():
    parts = [WeightedMeanAccumulator(HUGE) for _ in range(2)]
    parts[0].add(huge("a", 1e308, 10**9))
    parts[1].add(huge("b", 1e308, 10**9))
    merged = WeightedMeanAccumulator(HUGE)
    for part in parts:
        merged.merge(WeightedMeanAccumulator.from_partial_sums(HUGE, *part.partial_sums()))
    np.testing.assert_allclose(merged.result()["m"], 1e308, rtol=1e-15)
    assert merged.total_weight == 2e9 and merged.count == 2


def test_a_non_finite_model_is_refused_before_anything_changes():
    acc = WeightedMeanAccumulator(HUGE)
    acc.add(huge("a", 2.0, 1))
    with pytest.raises(ValidationError, match="'m' contains"):
        acc.add_weights({"m": np.array([1.0, np.inf, 0.0])}, 1.0)
    assert acc.count == 1 and acc.total_weight == 1.0 and (acc.result()["m"] == 2.0).all()


def test_zero_dimensional_tensors_stay_arrays():
    """A BatchNorm ``num_batches_tracked`` (0-d int64) and a 0-d float64 come back as 0-d arrays."""
    reference = {"bn.num_batches_tracked": np.array(0, np.int64), "scale": np.array(0.0, np.float64)}
    acc = WeightedMeanAccumulator(reference)
    for batches, weight in ((3, 1), (6, 2)):
        acc.add(
            ClientUpdate(
                "c", 1, {"bn.num_batches_tracked": np.array(batches, np.int64), "scale": np.array(1e-300)}, weight
            )
        )
    out = acc.result()
    assert isinstance(out["bn.num_batches_tracked"], np.ndarray) and out["bn.num_batches_tracked"].shape == ()
    assert out["bn.num_batches_tracked"].dtype == np.int64 and int(out["bn.num_batches_tracked"]) == 5
    assert isinstance(out["scale"], np.ndarray) and out["scale"].dtype == np.float64 and float(out["scale"]) == 1e-300
