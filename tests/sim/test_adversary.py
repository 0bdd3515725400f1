"""Simulated attackers: who they are, what they send, and that robust aggregation resists them."""

from statistics import NormalDist

import numpy as np
import pytest

from fedloom.core import ClientUpdate
from fedloom.core.errors import ConfigError
from fedloom.sim.adversary import Adversary, flip_labels
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config

G = {"w": np.zeros(3, np.float32)}


def updates(values):
    return [ClientUpdate(str(i), 1, {"w": np.full(3, v, np.float32)}, 10) for i, v in enumerate(values)]


def test_malicious_clients_are_a_seeded_fraction():
    adversary = Adversary("sign_flip", fraction=0.2)
    chosen = adversary.malicious(50, seed=3)
    assert len(chosen) == 10
    assert chosen == adversary.malicious(50, seed=3)
    assert chosen != adversary.malicious(50, seed=4)
    assert Adversary("none").malicious(50, 3) == frozenset()


def test_sign_flip_and_boost_by_hand():
    ups = updates([1.0, 2.0, 3.0, 4.0])
    flipped = Adversary("sign_flip", scale=2.0).poison(1, G, ups, frozenset({1}), seed=0)
    np.testing.assert_allclose(flipped[1].weights["w"], -4.0)  # 0 - 2 * (2 - 0)
    assert flipped[0] is ups[0]
    boosted = Adversary("boost").poison(1, G, ups, frozenset({3}), seed=0)
    np.testing.assert_allclose(boosted[3].weights["w"], 16.0)  # default boost = clients per round (4)


def test_alie_sends_mean_minus_z_sigma():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    out = Adversary("alie").poison(1, G, updates(values), frozenset({0, 1}), seed=0)
    z = NormalDist().inv_cdf((10 - (10 // 2 + 1 - 2)) / 10)  # n=10, f=2: s=4, z = inv_cdf(0.6)
    expected = np.mean(values) - z * np.std(values)
    np.testing.assert_allclose(out[0].weights["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(out[1].weights["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(out[2].weights["w"], 3.0)


def test_gaussian_noise_is_seeded():
    a = Adversary("gaussian", scale=0.5).poison(1, G, updates([1.0]), frozenset({0}), seed=7)
    b = Adversary("gaussian", scale=0.5).poison(1, G, updates([1.0]), frozenset({0}), seed=7)
    np.testing.assert_array_equal(a[0].weights["w"], b[0].weights["w"])
    assert a[0].weights["w"].dtype == np.float32


def test_label_flip():
    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 9], np.int64), 10), [9, 6, 0])


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"kind": "poison"}, "--attack"), ({"fraction": 1.0}, "--attack-fraction")]
)
def test_bad_attack_settings_name_the_flag(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Adversary(**kwargs)


def accuracy(strategy, attack, **params):
    cfg = SimConfig(
        dataset="digits", clients=10, rounds=6, lr=0.5, batch_size=16, strategy=strategy,
        strategy_params=params, attack=attack, attack_fraction=0.2,
    )  # fmt: skip
    result = simulate_config(cfg)
    return result.history[-1].metrics["accuracy"]


def test_boosted_attack_breaks_fedavg_but_not_the_median():
    assert accuracy("fedavg", "none") >= 0.85
    assert accuracy("fedavg", "boost") < 0.6
    assert accuracy("median", "boost") >= 0.85


def test_label_flipping_clients_train_on_flipped_labels():
    assert accuracy("fedavg", "label_flip") < accuracy("fedavg", "none")
