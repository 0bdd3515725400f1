"""Item: a poisoned metric must not wedge a run, and a failed store write at round close must heal."""

from __future__ import annotations

import numpy as np
import pytest
from aggregator_helpers import INIT, config, join, payload

from fedloom.core import from_bytes
from fedloom.core.errors import StoreError
from fedloom.server.aggregator import Aggregator, RequestRefusedError


def two_agents(agg, store):
    return [store.get_agent(join(agg, store, f"site-{i}").agent_id) for i in range(2)]


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        ({"m" * 201: 1.0}, "m" * 10),
        ({"lo\x00ss": 1.0}, "lo\\x00ss"),
        ({f"m{i}": 1.0 for i in range(10_001)}, "at most"),
        ({f"m{i}": 1.0 for i in range(65)}, "65 metrics"),
        ({"loss": 1e300}, "'loss'"),
    ],
)
def test_a_poisoned_metric_is_refused_at_upload_and_the_run_goes_on(make_aggregator, store, metrics, named):
    agg = make_aggregator(min_agents=2)
    a, b = two_agents(agg, store)
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(a, payload(a.id, 1, 1.0, metrics=metrics))
    assert (info.value.status, info.value.code) == (400, "invalid_payload")
    assert "metric" in info.value.detail and named in info.value.detail
    assert agg.status()["received"] == 0
    rejection = store.list_rejections(agg.run_id)[-1]
    assert rejection.code == "invalid_payload" and rejection.client_id == a.id
    # the same agent sends a clean update; the round closes and the store keeps working
    agg.submit_update(a, payload(a.id, 1, 1.0))
    agg.submit_update(b, payload(b.id, 1, 3.0))
    assert agg.status()["round"] == 2 and agg.status()["rounds_completed"] == 1
    assert [m.name for m in store.metrics(agg.run_id, scope="server")] == ["loss"]
    Aggregator(config(min_agents=2), store, initial_weights=INIT)  # a restart works


class FailOnceAfterGlobalModel:
    """A store proxy whose ``record_metrics`` fails once, right after a global model row was written."""

    def __init__(self, store):
        self._store = store
        self.armed = False
        self.failed = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save_global_model(self, *args, **kwargs):
        row = self._store.save_global_model(*args, **kwargs)
        self.armed = args[1] > 0 if len(args) > 1 else kwargs.get("round", 0) > 0
        return row

    def record_metrics(self, *args, **kwargs):
        if self.armed and not self.failed:
            self.failed += 1
            raise StoreError("database is locked (injected)")
        return self._store.record_metrics(*args, **kwargs)


def test_a_metrics_write_failing_after_the_global_model_row_heals_and_resumes(store, clock):
    proxy = FailOnceAfterGlobalModel(store)
    agg = Aggregator(config(min_agents=2), proxy, clock=clock, initial_weights=INIT)
    a, b = two_agents(agg, store)
    agg.submit_update(a, payload(a.id, 1, 1.0, metrics={"loss": 1.0}))
    assert agg.submit_update(b, payload(b.id, 1, 3.0, metrics={"loss": 3.0})) == 1
    assert proxy.failed == 1
    agg.tick()  # the next tick (or the reload the failure triggered) finishes the round
    status = agg.status()
    assert status["round"] == 2 and status["state"] == "collecting"
    assert [r.status for r in store.list_rounds(agg.run_id)][:1] == ["closed"]
    assert [(m.round, m.name, m.value) for m in store.metrics(agg.run_id, scope="server")] == [(1, "loss", 2.0)]
    agg.submit_update(a, payload(a.id, 2, 5.0))
    # a restarted aggregator resumes round 2 with the update already received
    again = Aggregator(config(min_agents=2), store, clock=clock, initial_weights=INIT)
    assert again.status()["round"] == 2 and again.status()["received"] == 1
    again.submit_update(b, payload(b.id, 2, 7.0))
    weights, _ = from_bytes(again.global_model_bytes(3)[0])
    np.testing.assert_allclose(weights["w"], 6.0)
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 1, 2]


def test_a_run_poisoned_before_validation_existed_still_resumes(store, clock):
    """A database holding a bad metric name (written by an older fedloom) must not stop a restart."""
    agg = Aggregator(config(min_agents=2), store, clock=clock, initial_weights=INIT)
    a, b = two_agents(agg, store)
    agg.submit_update(a, payload(a.id, 1, 1.0))
    # what the old code accepted: a local model row whose metric name the metrics table refuses
    store.save_local_model(
        agg.run_id,
        1,
        b.id,
        {k: np.full_like(v, 3.0) for k, v in INIT.items()},
        10,
        {"bad\x00name" + "x" * 300: 1.0, "loss": 3.0},
    )
    again = Aggregator(config(min_agents=2), store, clock=clock, initial_weights=INIT)
    assert again.status()["round"] == 2  # both updates reloaded, so the round closed at start
    assert [m.name for m in store.metrics(agg.run_id, scope="server")] == ["loss"]
    # and the same when the crash came after the global model row (the repair path)
    store.save_global_model(agg.run_id, 2, {k: np.full_like(v, 9.0) for k, v in INIT.items()}, 20)
    store.save_local_model(agg.run_id, 2, b.id, None, 10, {"x" * 300: 1.0}, sha256="0" * 64, keep_blob=False)
    third = Aggregator(config(min_agents=2), store, clock=clock, initial_weights=INIT)
    assert third.status()["round"] == 3
