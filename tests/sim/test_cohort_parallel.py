"""The parallel executor's workers train their share of each round as a cohort (issue 13).

Bounds: every client's weights equal the sequential one-by-one executor's within
cohort_cases.TOL (1e-5; float32 reassociation in the batched kernels, see there), the
pre-merged mean within 1e-5 too; integer buffers (BatchNorm's 0-d int64 counter) exactly.
``cohort="off"`` hands out one client at a time, bitwise as before.
"""

import logging
import os
import time

import numpy as np
import pytest
import torch
from cohort_cases import TOL, bn_model, client_fn_for, federation
from torch import nn

import fedloom
from fedloom import fedavg
from fedloom.algorithms.registry import build_strategy
from fedloom.models import mlp
from fedloom.sim.cohort import runner
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import ClientFailure, ClientUpdate, MergedUpdates, SequentialExecutor
from fedloom.sim.parallel import ParallelExecutor, plan_shares
from fedloom.sim.tasks import make_executor

pytestmark = pytest.mark.torch

UNEVEN = [37, 9, 20, 3, 64, 16]  # batch 8: short last batches, clients that stop early
QUIET = {"recording": fedloom.Recording(store=None), "observers": []}


@pytest.fixture
def cohorts(monkeypatch, tmp_path):
    """Every cohort trained in any process, as (pid, number of clients) (forked workers inherit the patch)."""
    path = tmp_path / "cohorts"
    real = runner.train_cohort

    def recording(settings, jobs):
        with path.open("a") as out:
            out.write(f"{os.getpid()} {len(jobs)}\n")
        return real(settings, jobs)

    monkeypatch.setattr(runner, "train_cohort", recording)
    monkeypatch.setattr(runner, "_said", set())
    return lambda: (
        [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines()] if path.exists() else []
    )


def one_round(executor, model, data, merge=False, client_fn=None):
    """One fedavg round (2 epochs, batch 8) of every client from the model's *initial* weights
    (kept on the module: training moves the shared module, so they are put back first)."""
    strategy = fedavg(1.0, 1, 2, 8, 0.1)
    model.load_state_dict(model.initial)
    initial = {k: v.detach().numpy().copy() for k, v in model.initial.items()}
    configs = {str(i): strategy.client.fit_config(1, str(i), 0) for i in range(len(data))}
    make = client_fn or client_fn_for(model, data)
    torch.manual_seed(0)
    try:
        results = list(executor.run_round(1, initial, configs, make, merge=merge))
    finally:
        executor.close()
    return initial, results


def with_initial(model):
    model.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model


def by_client(results):
    return sorted(results, key=lambda r: int(r.client_id))


def difference(reference, results):
    """The largest |difference| over every client and tensor; names, shapes, dtypes, sizes and steps must match
    (a worker's weights come back through safetensors, whose order of names is its own)."""
    results = by_client(results)
    assert [u.client_id for u in reference] == [u.client_id for u in results]
    worst = 0.0
    for a, b in zip(reference, results, strict=True):
        assert sorted(a.weights) == sorted(b.weights)
        assert (a.num_samples, a.metrics["local_steps"]) == (b.num_samples, b.metrics["local_steps"])
        for name, want in a.weights.items():
            got = b.weights[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            worst = max(worst, float(np.abs(want.astype(np.float64) - got.astype(np.float64)).max(initial=0.0)))
    return worst


def sequential(model, data, **kwargs):
    return one_round(SequentialExecutor("off"), model, data, **kwargs)[1]


@pytest.mark.parametrize("build", [lambda: mlp((1, 8, 8), 3, hidden=(8,)), bn_model], ids=["mlp", "batchnorm"])
def test_each_worker_trains_its_share_as_one_cohort_and_every_client_matches(build, cohorts):
    torch.manual_seed(0)
    model, data = with_initial(build()), federation(UNEVEN)
    reference = sequential(model, data)
    _, results = one_round(ParallelExecutor(2, cohort="auto"), model, data)
    trained = cohorts()
    assert sorted(n for _, n in trained) == [3, 3] and len({pid for pid, _ in trained}) == 2  # one share per worker
    assert os.getpid() not in {pid for pid, _ in trained}
    assert 0 < difference(reference, results) <= TOL  # the batched path, equal within the bound
    if "1.num_batches_tracked" in reference[0].weights:
        counters = [u.weights["1.num_batches_tracked"] for u in by_client(results)]
        assert [int(c) for c in counters] == [10, 4, 6, 2, 16, 4]  # 2 epochs of each client's own steps
        assert all(c.shape == () and c.dtype == np.int64 for c in counters)


def test_a_robust_aggregator_receives_every_client_and_ends_where_the_sequential_run_ends(cohorts):
    """Median needs every update (no pre-merging): the round's model equals the sequential one's within TOL."""
    data = federation(UNEVEN)
    strategy = build_strategy("median", fraction=1.0, epochs=1, batch_size=8, lr=0.1)
    finals = []
    for executor in (SequentialExecutor("off"), ParallelExecutor(2, cohort=3)):
        torch.manual_seed(0)
        model = mlp((1, 8, 8), 3, hidden=(8,))
        try:
            result = fedloom.simulate(client_fn_for(model, data), 6, strategy, 1, executor=executor, **QUIET)
        finally:
            executor.close()
        finals.append(result.final_weights)
    assert len(cohorts()) == 2
    for name, want in finals[0].items():
        np.testing.assert_allclose(finals[1][name], want, rtol=0, atol=TOL)


def test_mean_rounds_send_one_partial_sum_per_worker_equal_to_the_sequential_mean(cohorts):
    torch.manual_seed(0)
    model, data = with_initial(mlp((1, 8, 8), 3, hidden=(8,))), federation(UNEVEN)
    reference = sequential(model, data)
    initial, results = one_round(ParallelExecutor(2, cohort="auto"), model, data, merge=True)
    assert all(isinstance(r, MergedUpdates) for r in results) and len(results) == 2  # O(workers), not O(clients)
    assert sorted(int(rep.client_id) for r in results for rep in r.reports) == list(range(6))
    merged = fedavg().start_accumulator(initial, 6)
    for r in results:
        merged.merge(r.partial)
    expected = fedavg().start_accumulator(initial, 6)
    for update in reference:
        expected.add(update)
    want, got = expected.result(), merged.result()
    assert max(float(np.abs(want[k] - got[k]).max()) for k in want) <= 1e-5
    assert len(cohorts()) == 2


def test_a_failing_client_is_reported_as_today_and_the_rest_of_its_share_trains(cohorts):
    """Client 1's labels are out of range (its cohort fails, its share is retrained one by one) and
    client 4's client_fn raises: both are reported exactly as the one-at-a-time executor reports them."""
    torch.manual_seed(0)
    model, data = with_initial(mlp((1, 8, 8), 3, hidden=(8,))), federation(UNEVEN)
    data[1] = (data[1][0], np.full(len(data[1][1]), 7, np.int64))
    good = client_fn_for(model, data)

    def make(i):
        if i == 4:
            raise OSError("client 4's data file is missing")
        return good(i)

    runs = [by_client(one_round(ParallelExecutor(2, cohort=c), model, data, client_fn=make)[1]) for c in ("off", 3)]
    today, shared = runs
    assert [type(r) for r in shared] == [
        ClientUpdate,
        ClientFailure,
        ClientUpdate,
        ClientUpdate,
        ClientFailure,
        ClientUpdate,
    ]
    for old, new in zip(today, shared, strict=True):
        assert type(old) is type(new) and old.client_id == new.client_id
        if isinstance(old, ClientFailure):
            assert (new.message, new.code) == (old.message, old.code) and new.details
        else:
            for name, value in old.weights.items():
                np.testing.assert_allclose(new.weights[name], value, rtol=0, atol=TOL)
    assert "IndexError" in shared[1].message and shared[4].message == "OSError: client 4's data file is missing"


class Branchy(nn.Module):
    """Data-dependent control flow, which vmap refuses: every worker falls back to one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x.flatten(1))
        return h * 2 if h.sum() > 0 else h


def test_a_refused_model_falls_back_with_at_most_one_log_line_per_worker(cohorts, tmp_path):
    handler = logging.FileHandler(tmp_path / "cohort.log")  # O_APPEND: the forked workers write here too
    logger = logging.getLogger("fedloom.sim.cohort")
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.INFO
    try:
        torch.manual_seed(0)
        model, data = with_initial(Branchy()), federation(UNEVEN * 2)
        reference = sequential(model, data)
        _, results = one_round(ParallelExecutor(2, cohort=6), model, data)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
    assert difference(reference, results) == 0.0  # trained by the per-client code
    lines = (tmp_path / "cohort.log").read_text().splitlines()
    assert 1 <= len(lines) <= 2 and all("vmap cannot batch this model" in line for line in lines), lines
    assert cohorts() == []


def test_cohort_off_hands_out_one_client_at_a_time_bitwise_as_the_sequential_executor(cohorts):
    torch.manual_seed(0)
    model, data = with_initial(bn_model()), federation(UNEVEN)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run: single-threaded kernels are what makes it bitwise
    try:
        reference = sequential(model, data)
    finally:
        torch.set_num_threads(threads)
    _, results = one_round(ParallelExecutor(2, cohort="off"), model, data)
    assert difference(reference, results) == 0.0
    assert cohorts() == []
    assert ParallelExecutor(2).cohort == "off"  # the Python default, as SequentialExecutor's


def test_shares_cover_the_round_in_order():
    ids = [str(i) for i in range(7)]
    assert plan_shares(ids, 2, "off") == [[c] for c in ids]
    assert plan_shares(ids, 2, "auto") == [ids[:4], ids[4:]]
    assert plan_shares(ids, 2, 3) == [ids[:3], ids[3:6], ids[6:]]
    assert plan_shares([], 2, "auto") == []


def test_fedloom_sim_passes_the_cohort_setting_to_the_parallel_workers():
    assert make_executor(SimConfig(executor="parallel")).cohort == "auto"  # fedloom sim's default
    assert make_executor(SimConfig(executor="parallel", cohort="off")).cohort == "off"
    assert make_executor(SimConfig(executor="parallel", cohort="8")).cohort == 8


@pytest.mark.parametrize("merge", [False, True])
def test_a_worker_killed_in_a_cohort_share_finds_the_culprit_and_reports_it_as_today(cohorts, tmp_path, merge):
    """Client 4 kills its process: the share it was in is re-run one client at a time, so client 4 alone is
    reported (with max_retries=1: 1 try + 1 retry after the share), its share-mates and the rest train."""
    torch.manual_seed(0)
    model, data = with_initial(mlp((1, 8, 8), 3, hidden=(8,))), federation(UNEVEN)
    reference = sequential(model, data)
    tries = tmp_path / "tries"
    good = client_fn_for(model, data)

    def make(i):
        if i == 4:
            with tries.open("a") as out:
                out.write("x")
            os._exit(4)
        return good(i)

    _, results = one_round(ParallelExecutor(2, cohort=3, max_retries=1), model, data, merge=merge, client_fn=make)
    [failure] = [r for r in results if isinstance(r, ClientFailure)]
    assert failure.client_id == "4" and "exited with code 4 while training client 4" in failure.message
    assert tries.read_text() == "xxx"  # in its share, then alone: 1 try + 1 retry
    if merge:
        reports = sorted(int(rep.client_id) for r in results if isinstance(r, MergedUpdates) for rep in r.reports)
        assert reports == [0, 1, 2, 3, 5]
    else:
        trained = [r for r in results if isinstance(r, ClientUpdate)]
        assert difference([u for u in reference if u.client_id != "4"], trained) <= TOL


def test_a_client_that_hangs_in_a_cohort_share_times_out_alone(cohorts):
    """The share's limit is client_timeout x its size; then each of its clients runs alone with its own."""
    torch.manual_seed(0)
    model, data = with_initial(mlp((1, 8, 8), 3, hidden=(8,))), federation(UNEVEN)
    good = client_fn_for(model, data)

    def make(i):
        if i == 1:
            time.sleep(60)
        return good(i)

    executor = ParallelExecutor(2, cohort=3, client_timeout=1.0)
    _, results = one_round(executor, model, data, client_fn=make)
    [failure] = [r for r in results if isinstance(r, ClientFailure)]
    assert failure.client_id == "1"
    assert failure.message == "client 1 exceeded client_timeout=1.0s; its worker was killed"
    assert sorted(int(r.client_id) for r in results if isinstance(r, ClientUpdate)) == [0, 2, 3, 4, 5]


def test_a_model_auto_trains_one_by_one_keeps_the_one_at_a_time_hand_out(cohorts, caplog):
    """Above auto's CPU limit the driver hands out one client at a time (balancing uneven clients), as with
    cohort="off": bitwise the same results, no cohort, the reason said once (by the driver)."""
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    model, data = with_initial(mlp((1, 8, 8), 3, hidden=(800,))), federation(UNEVEN)  # 54,403 parameters
    off = one_round(ParallelExecutor(2, cohort="off"), model, data)[1]
    auto = one_round(ParallelExecutor(2, cohort="auto"), model, data)[1]
    assert difference(by_client(off), auto) == 0.0
    assert cohorts() == []
    said = [r.getMessage() for r in caplog.records if r.name == "fedloom.sim.cohort"]
    assert len(said) == 1 and "batches models of up to 50,000 parameters" in said[0]
