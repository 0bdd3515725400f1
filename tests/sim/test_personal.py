"""Personal keys (FedPer/FedBN style): never aggregated, kept per client, evaluated both ways."""

import dataclasses

import numpy as np

from fedloom.algorithms.registry import build_strategy
from fedloom.client.personal import PersonalStore, keep_personal, with_personal
from fedloom.core import ClientUpdate
from fedloom.server import RoundEngine
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task, simulate_config


def test_the_engine_never_aggregates_personal_keys():
    strategy = build_strategy("fedavg", fraction=1.0, params={"personal_keys": "head.*"})
    init = {"body.w": np.zeros(2), "head.w": np.full(2, 7.0)}
    engine = RoundEngine(strategy, init)
    engine.register_clients([("a", None), ("b", None)])
    task = engine.open_round()
    for cid, value in zip(task.selected, (1.0, 3.0), strict=True):
        engine.submit(ClientUpdate(cid, 1, {"body.w": np.full(2, value), "head.w": np.full(2, -value)}, 10))
    out = engine.close_round().weights
    np.testing.assert_allclose(out["body.w"], 2.0)
    np.testing.assert_allclose(out["head.w"], 7.0)
    assert strategy.client.extra["personal_keys"] == ["head.*"]


def test_store_round_trip_is_per_client(tmp_path):
    store = PersonalStore(tmp_path)
    keep_personal({"a": np.ones(2), "b": np.zeros(1)}, "3", ["a"], store)
    merged = with_personal({"a": np.zeros(2), "b": np.full(1, 5.0)}, "3", ["a"], store)
    np.testing.assert_array_equal(merged["a"], 1.0)
    np.testing.assert_array_equal(merged["b"], 5.0)
    assert with_personal({"a": np.zeros(2)}, "4", ["a"], store)["a"].sum() == 0  # another client: global


def test_personal_bias_beats_the_global_model_on_skewed_clients():
    cfg = SimConfig(
        dataset="digits", clients=10, rounds=5, lr=0.5, batch_size=16, partition="shards", classes_per_client=2,
        strategy_params={"personal_keys": "bias"},
    )  # fmt: skip
    result = simulate_config(dataclasses.replace(cfg, client_eval_fraction=1.0))
    task = build_task(cfg)
    last = result.history[-1].metrics
    assert last["client_personal_accuracy"] > last["client_accuracy"] + 0.05
    np.testing.assert_array_equal(result.final_weights["bias"], task.initial_weights["bias"])


def test_global_personal_and_finetuned_accuracy_per_client_on_held_out_data(tmp_path):
    from fedloom.store import SqlStore

    cfg = SimConfig(
        dataset="digits", clients=10, rounds=3, lr=0.5, batch_size=16, partition="shards", classes_per_client=2,
        strategy_params={"personal_keys": "bias"}, local_test_fraction=0.3, finetune_epochs=2,
    )  # fmt: skip
    task = build_task(cfg)
    assert sum(task.client_sizes) < sum(len(p) for p in task.partitions)  # 30% held out per client
    with SqlStore.open_default(tmp_path) as store:
        result = simulate_config(dataclasses.replace(cfg, client_eval_fraction=1.0), store=store)
        last = result.history[-1]
        assert set(last.per_client) == {str(i) for i in range(10)}
        assert {"client_accuracy", "client_personal_accuracy", "client_finetuned_accuracy"} <= set(last.metrics)
        assert last.metrics["client_finetuned_accuracy"] > last.metrics["client_accuracy"]
        recorded = [m for m in store.metrics(result.run_id, scope="client") if m.round == 3]
        assert {m.client_id for m in recorded} == {str(i) for i in range(10)}
