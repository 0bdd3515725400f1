"""A simulation stores its server optimiser's state with each global model (without any local blob),
so an interrupted FedAdam simulation resumes exactly."""

import dataclasses

import numpy as np
import pytest

import fedloom
from fedloom.algorithms.server_opt import AdaptiveServerOpt
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task, simulate_config
from fedloom.store import SqlStore


def test_a_fedadam_simulation_stores_its_optimiser_state_every_round(tmp_path):
    cfg = SimConfig(
        dataset="digits", clients=4, rounds=3, lr=0.5, batch_size=16, strategy="fedadam",
        strategy_params={"server_lr": 0.1},
    )  # fmt: skip
    with SqlStore.open_default(tmp_path) as store:
        simulate_config(cfg, store=store)
        (run,) = store.list_runs()
        assert all(m.blob_key is None for m in store.list_local_models(run.id))  # nothing to replay from
        fresh = AdaptiveServerOpt("fedadam", server_lr=0.1).init(store.load_global_model(run.id, 1))
        for number in (1, 2, 3):
            stored = store.load_server_state(run.id, number)
            assert stored is not None
            tensors, step = stored
            assert step == number
            assert set(tensors) == set(fresh.tensors)
            assert all(tensors[k].dtype == np.float64 and tensors[k].shape == v.shape for k, v in fresh.tensors.items())
        first, last = store.load_server_state(run.id, 1), store.load_server_state(run.id, 3)
        assert first is not None and last is not None
        assert any(not np.array_equal(first[0][k], last[0][k]) for k in first[0])  # the moments moved


def test_an_interrupted_fedadam_simulation_resumes_bitwise_identical(tmp_path):
    job = SimConfig(dataset="digits", clients=6, fraction=0.5, rounds=5, lr=0.5, batch_size=16, seed=3)
    job = dataclasses.replace(job, strategy="fedadam", strategy_params={"server_lr": 0.1})
    task = build_task(job)
    strategy = job.build_strategy()
    assert strategy.server_opt is not None
    common = {"seed": job.seed, "initial_weights": task.initial_weights, "observers": []}
    common["environment"] = fedloom.Environment(client_sizes=task.client_sizes)
    reference = fedloom.simulate(task.client_fn, job.clients, strategy, 5, recording=fedloom.Recording(None), **common)
    with SqlStore.open_default(tmp_path) as store:

        def stop_in_round_three(i: int) -> fedloom.Trainer:
            if len(store.list_global_models(store.list_runs()[0].id)) >= 2:
                raise KeyboardInterrupt  # Ctrl-C while round 3 trains
            return task.client_fn(i)

        with pytest.raises(KeyboardInterrupt):
            recording = fedloom.Recording(store)
            fedloom.simulate(stop_in_round_three, job.clients, strategy, 5, recording=recording, **common)
        run = store.list_runs()[0]
        assert run.status == "interrupted"
        assert store.load_server_state(run.id, 2) is not None  # what the resume continues from
        result = fedloom.simulate(
            task.client_fn, job.clients, strategy, 5, recording=fedloom.Recording(store, resume=run.id), **common
        )
    assert [s.round for s in result.history] == [3, 4, 5]
    for name, value in reference.final_weights.items():
        np.testing.assert_array_equal(result.final_weights[name], value, err_msg=name)
