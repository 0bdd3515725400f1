"""A simulation stores its server optimiser's state with each global model, without any local blob."""

import numpy as np

from fedloom.algorithms.server_opt import AdaptiveServerOpt
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
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
