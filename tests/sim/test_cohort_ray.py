"""The Ray executor's actors train their share of a round as a cohort, like the parallel workers (issue 13).

Bound: cohort_cases.TOL (1e-5) against per-client training with one thread (the actors' own), under
which per-client training would be bitwise equal: a difference above 0 shows the batched path ran.
"""

import os
import sys
from typing import Any

import cohort_cases
import numpy as np
import pytest
import torch
from cohort_cases import TOL, client_fn_for, federation

from fedloom import fedavg
from fedloom.models import mlp
from fedloom.sim.executor import ClientFailure, ClientUpdate, SequentialExecutor

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")]

UNEVEN = [37, 9, 20, 3, 64, 16]


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install 'fedloom[ray]'`")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for module in (sys.modules[__name__], cohort_cases):  # the workers cannot import the test files
        ray.cloudpickle.register_pickle_by_value(module)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def one_round(executor, model, initial, data):
    strategy = fedavg(1.0, 1, 2, 8, 0.1)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in initial.items()})
    configs = {str(i): strategy.client.fit_config(1, str(i), 0) for i in range(len(data))}
    try:
        return sorted(
            executor.run_round(1, initial, configs, client_fn_for(model, data)), key=lambda r: int(r.client_id)
        )
    finally:
        executor.close()


def test_ray_actors_train_their_shares_as_cohorts_and_report_failures_as_one_at_a_time(local_ray):
    from fedloom.sim.ray_executor import RayExecutor

    torch.manual_seed(0)
    model, data = mlp((1, 8, 8), 3, hidden=(8,)), federation(UNEVEN)
    data[1] = (data[1][0], np.full(len(data[1][1]), 7, np.int64))  # client 1's labels are out of range
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = one_round(SequentialExecutor("off"), model, initial, data)
    finally:
        torch.set_num_threads(threads)
    off = one_round(RayExecutor(cohort="off", max_retries=0), model, initial, data)
    shared = one_round(RayExecutor(cohort="auto", max_retries=0), model, initial, data)
    assert [type(r) for r in shared] == [ClientUpdate, ClientFailure, *[ClientUpdate] * 4]
    assert shared[1].message == off[1].message == reference[1].message and "IndexError" in shared[1].message
    worst = 0.0
    for want, one_by_one, got in zip(reference, off, shared, strict=True):
        if isinstance(want, ClientFailure):
            continue
        for name, value in want.weights.items():
            assert np.array_equal(one_by_one.weights[name], value)  # Ray, one at a time: bitwise
            worst = max(worst, float(np.abs(got.weights[name] - value).max()))
    assert 0 < worst <= TOL  # the shares were batched, and equal within the bound
