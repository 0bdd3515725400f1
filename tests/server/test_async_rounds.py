"""AsyncRounds: FedBuff's buffer with polynomial staleness weighting, as pure state."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.core import ClientUpdate
from fedloom.core.errors import ConfigError, ValidationError
from fedloom.server.async_rounds import AsyncRounds, staleness_weight

INIT = {"w": np.zeros(3, np.float32)}


def upd(client, round, value, n=10):
    return ClientUpdate(client, round, {"w": np.full(3, value, np.float32)}, n)


def make(**kw):
    return AsyncRounds(INIT, **{"version": 0, "buffer_size": 2, "staleness_exponent": 0.5, **kw})


def test_staleness_weight_formula():
    assert staleness_weight(10, 0, 0.5) == 10
    assert staleness_weight(10, 3, 0.5) == pytest.approx(10 / 2)
    assert staleness_weight(8, 1, 1.0) == pytest.approx(4)
    assert staleness_weight(8, 5, 0.0) == 8
    with pytest.raises(ValidationError):
        staleness_weight(8, -1, 0.5)


def test_every_buffer_size_arrivals_make_a_version_weighted_by_staleness():
    rounds = make()
    assert rounds.current_round == 1 and not rounds.ready
    assert rounds.add(upd("a", 1, 1.0, n=10)) == 10
    rounds.add(upd("b", 1, 4.0, n=30))
    assert rounds.ready and rounds.buffered == ("a", "b")
    version = rounds.result()
    assert rounds.version == 0  # result() changes nothing
    np.testing.assert_allclose(version.weights["w"], (10 + 120) / 40)
    rounds.advance(version)
    assert (rounds.version, rounds.current_round, rounds.buffered) == (1, 2, ())
    # c trained from version 0 (round 1): staleness 1; a from version 1: staleness 0
    wc = rounds.add(upd("c", 1, 2.0, n=20))
    wa = rounds.add(upd("a", 2, 6.0, n=10))
    assert wc == pytest.approx(20 * 2**-0.5) and wa == 10
    version = rounds.result()
    np.testing.assert_allclose(version.weights["w"], (wc * 2 + wa * 6) / (wc + wa), rtol=1e-6)
    assert version.num_samples == 30 and version.num_updates == 2 and version.version == 2


def test_refusals():
    rounds = make(max_versions=1)
    rounds.add(upd("a", 1, 1.0))
    assert rounds.check(upd("a", 1, 1.0))[0] == "duplicate"
    assert rounds.check(upd("b", 2, 1.0))[0] == "wrong_round"
    assert rounds.check(upd("b", 0, 1.0))[0] == "wrong_round"
    bad = ClientUpdate("b", 1, {"w": np.zeros(4, np.float32)}, 1)
    assert rounds.check(bad)[0] == "invalid_weights"
    with pytest.raises(ValidationError, match="duplicate"):
        rounds.add(upd("a", 1, 1.0))
    rounds.add(upd("b", 1, 1.0))
    with pytest.raises(ValidationError, match="buffer is full"):
        rounds.add(upd("c", 1, 1.0))
    rounds.advance(rounds.result())
    assert rounds.finished and rounds.check(upd("c", 2, 1.0))[0] == "round_closed"


def test_metrics_resume_and_guards():
    rounds = make(version=4, uploaded=[("a", 5)])
    assert rounds.current_round == 5 and rounds.has_uploaded("a", 5)
    rounds.add(ClientUpdate("b", 5, {"w": np.ones(3, np.float32)}, 10, {"loss": 1.0}))
    rounds.add(ClientUpdate("c", 4, {"w": np.ones(3, np.float32)}, 30, {"loss": 3.0}))
    version = rounds.result()
    assert version.client_metrics == {"loss": pytest.approx(2.5)}
    with pytest.raises(ValidationError, match="does not follow"):
        rounds.advance(type(version)(7, version.weights, 2, 40, {}))
    with pytest.raises(ValidationError, match="empty"):
        make().result()
    with pytest.raises(ConfigError):
        make(buffer_size=0)
    with pytest.raises(ConfigError):
        make(staleness_exponent=-1)


def test_fedasync_mixing_by_hand():
    rounds = make(buffer_size=1, staleness_exponent=1.0, mixing=0.5)
    rounds.add(upd("a", 1, 4.0))
    rounds.advance(rounds.result())  # staleness 0: alpha 0.5 -> 2
    np.testing.assert_allclose(rounds.global_weights["w"], 2.0)
    rounds.add(upd("b", 1, 8.0))  # trained from version 0, now version 1: staleness 1, alpha 0.25
    rounds.advance(rounds.result())
    np.testing.assert_allclose(rounds.global_weights["w"], 0.75 * 2.0 + 0.25 * 8.0)


def test_mixing_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="mixing"):
        make(mixing=1.5)


def test_huge_values_with_huge_sample_counts_make_a_finite_version():
    rounds = AsyncRounds({"m": np.zeros(2)}, version=0, buffer_size=2, staleness_exponent=0.5)
    rounds.add(ClientUpdate("a", 1, {"m": np.full(2, 1e300)}, 10**9))
    rounds.add(ClientUpdate("b", 1, {"m": np.full(2, 1e300)}, 10**9))
    np.testing.assert_allclose(rounds.result().weights["m"], 1e300, rtol=1e-12)
