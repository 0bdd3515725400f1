"""Issue 11, client-side DP with secure aggregation in deployment: each agent clips its update and
adds its noise share, enters the masked sum with weight 1, and the aggregator divides the unmasked
sum by the round's selection; ε is accounted and stored per round as without SecAgg."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import serving
from test_secagg_http import INIT, NAMES, STEP, SiteTrainer, final_weights, run_agents, secure

from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app

pytest.importorskip("cryptography")
pytest.importorskip("dp_accounting")

#: tiny noise and a clip no update reaches: the result is the uniform mean of the updates
DP = {"dp_mode": "client", "dp_noise_multiplier": 1e-9, "dp_clip_norm": 10.0, "dp_delta": 1e-3, "dp_noise_seed": 4}


def uniform_mean(weights):
    models = [SiteTrainer(n).fit(weights, None).weights for n in NAMES]
    out = {}
    for key, value in weights.items():
        if value.dtype.kind == "i":
            out[key] = value  # DP releases no client statistic without noise: counters keep the global value
        else:
            out[key] = np.asarray(sum(np.asarray(m[key], np.float64) for m in models) / len(models), value.dtype)
    return out


def test_client_dp_under_secagg_is_the_uniform_mean_and_stores_epsilon(store, tmp_path):
    agg = Aggregator(secure(max_rounds=2, **DP), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, NAMES) == []
    last, secured = final_weights(store, agg.run_id)
    assert last == 2
    expected = uniform_mean(uniform_mean(dict(INIT)))
    for key, value in expected.items():
        got = secured[key]
        assert got.dtype == value.dtype and got.shape == value.shape
        tolerance = 2 * STEP + 1e-6  # quantisation per round, float32 rounding and the 1e-9 noise
        assert np.max(np.abs(got.astype(np.float64) - value.astype(np.float64))) <= tolerance, key
    epsilons = store.metric_series(agg.run_id, "privacy/epsilon")
    assert [r for r, _ in epsilons] == [1, 2] and 0 < epsilons[0][1] < epsilons[1][1]
    assert not [r for r in store.list_rejections(agg.run_id) if r.code.startswith("secagg")]
