"""The process-pool executor: same results as the sequential reference, O(workers) traffic,
crashes reported (never hangs), retries, timeouts, and no process left behind."""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

import fedloom
from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.core import ClientError, ConfigError, EvalConfig, FitConfig, FitResult, content_hash
from fedloom.server.engine import RoundEngine
from fedloom.sim import parallel
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import ClientFailure, ExecutorResult, MergedUpdates, SequentialExecutor
from fedloom.sim.parallel import ParallelExecutor, default_workers
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore

#: record nothing, print nothing
QUIET = {"recording": fedloom.Recording(store=None), "observers": []}

MODEL_SIZE = 1000  # float32 entries of the tiny model (big enough for payload sizes to tell)
Hook = Callable[[int, int], None]  # (client index, round)


# ----------------------------------------------------------------------------- helpers


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped, or a zombie nobody has reaped yet)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in text.splitlines())


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        multiprocessing.active_children()  # reaps our own exited children
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


@pytest.fixture(autouse=True)
def no_leftover_children():
    assert multiprocessing.active_children() == []
    yield
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [], "a worker process outlived its test"


def worker_pids() -> list[int]:
    return sorted(p.pid for p in multiprocessing.active_children() if p.pid is not None)


class Shift:
    """A tiny deterministic trainer: client ``i`` returns the global model + (i + 1), from i + 1 samples.

    ``before_fit(index, round)`` runs first inside ``fit`` (to raise, exit, hang...).
    """

    def __init__(self, index: int, before_fit: Hook | None = None) -> None:
        self.index = index
        self.before_fit = before_fit

    def get_weights(self):
        return {"w": np.zeros(MODEL_SIZE, np.float32), "b": np.zeros((2, 3), np.float32)}

    def fit(self, weights, config: FitConfig) -> FitResult:
        if self.before_fit is not None:
            self.before_fit(self.index, config.round)
        shifted = {k: v + np.float32(self.index + 1) for k, v in weights.items()}
        return FitResult(shifted, self.index + 1, {"loss": float(self.index)})

    def evaluate(self, weights, config: EvalConfig) -> dict[str, float]:
        return {"mean": float(np.mean(weights["w"])), "num_samples": 1.0}


def shift_fn(before_fit: Hook | None = None) -> Callable[[int], Shift]:
    return lambda i: Shift(i, before_fit)


def expected_mean(initial: Mapping[str, np.ndarray], clients: list[int]) -> dict[str, np.ndarray]:
    """The FedAvg formula for Shift clients: w0 + sum n_i (i + 1) / sum n_i with n_i = i + 1."""
    shift = sum((i + 1) ** 2 for i in clients) / sum(i + 1 for i in clients)
    return {k: v.astype(np.float64) + shift for k, v in initial.items()}


def configs_for(clients: list[int], round: int = 1) -> dict[str, FitConfig]:
    return {str(i): FitConfig(round=round, seed=i) for i in clients}


def aggregate(results: list[ExecutorResult], reference: Mapping[str, np.ndarray]) -> tuple[dict, list[str]]:
    """Fold executor results into one weighted mean; also return the client ids it covers."""
    acc = WeightedMeanAccumulator(reference)
    covered: list[str] = []
    for result in results:
        if isinstance(result, MergedUpdates):
            acc.merge(result.partial)
            covered += [r.client_id for r in result.reports]
        elif not isinstance(result, ClientFailure):
            acc.add(result)
            covered.append(result.client_id)
    return acc.result(), covered


def assert_weights_close(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], atol: float = 1e-6) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name], np.float64), np.asarray(b[name], np.float64), atol=atol)


def failures(results: list[ExecutorResult]) -> list[ClientFailure]:
    return [r for r in results if isinstance(r, ClientFailure)]


# ----------------------------------------------------------------------------- same results as sequential


@pytest.fixture
def store(tmp_path):
    s = SqlStore.open_default(tmp_path / "home")
    yield s
    s.close()


def run_digits(store, executor, seed=3, rounds=5, evaluate_hook=None):
    cfg = SimConfig(dataset="digits", clients=10, rounds=rounds, seed=seed, lr=0.5)
    task = build_task(cfg)

    def evaluate(weights):
        if evaluate_hook:
            evaluate_hook()
        return task.evaluate_fn(weights)

    return fedloom.simulate(
        task.client_fn,
        cfg.clients,
        fedloom.fedavg(fraction=0.5, epochs=1, batch_size=16, lr=cfg.lr),
        rounds,
        seed=seed,
        initial_weights=task.initial_weights,
        environment=fedloom.Environment(client_sizes=task.client_sizes),
        evaluation=fedloom.Evaluation(evaluate),
        recording=fedloom.Recording(store=store),
        executor=executor,
        observers=[],
    )


def test_parallel_run_matches_the_sequential_reference(store):
    seen_workers: list[list[int]] = []
    sequential = run_digits(store, None)
    parallel_run = run_digits(store, ParallelExecutor(2), evaluate_hook=lambda: seen_workers.append(worker_pids()))

    seq_rounds, par_rounds = store.list_rounds(sequential.run_id), store.list_rounds(parallel_run.run_id)
    assert [r.selected for r in par_rounds] == [r.selected for r in seq_rounds]
    assert all(len(r.selected) == 5 for r in seq_rounds)
    assert len({r.selected for r in seq_rounds}) > 1  # sampling really varies by round
    for round_no in range(1, 6):
        seq_local = store.list_local_models(sequential.run_id, round=round_no)
        par_local = store.list_local_models(parallel_run.run_id, round=round_no)
        assert [m.client_id for m in par_local] == [m.client_id for m in seq_local]
        assert [m.num_samples for m in par_local] == [m.num_samples for m in seq_local]
    # Round 1 trains from the same global model with the same seeds: bit-identical local models.
    assert [m.sha256 for m in store.list_local_models(parallel_run.run_id, round=1)] == [
        m.sha256 for m in store.list_local_models(sequential.run_id, round=1)
    ]
    assert_weights_close(parallel_run.final_weights, sequential.final_weights, atol=1e-6)
    assert abs(parallel_run.final_metrics["accuracy"] - sequential.final_metrics["accuracy"]) <= 0.005
    assert parallel_run.final_metrics["accuracy"] >= 0.85
    # The pool was started once and reused: the same two workers in every round, then gone.
    assert len(seen_workers) == 5 and len(seen_workers[0]) == 2
    assert all(pids == seen_workers[0] for pids in seen_workers)
    assert _wait_gone(seen_workers[0]) == []


# ----------------------------------------------------------------------------- merge=True: O(workers) traffic


def test_mergeable_rounds_send_one_partial_sum_per_busy_worker(monkeypatch):
    sent: list[tuple[str, int]] = []
    received: list[tuple[str, int]] = []
    real_send, real_recv = parallel.send_frame, parallel.recv_frame

    def counting_send(sock, header, payload=b""):
        sent.append((header["type"], len(payload)))
        real_send(sock, header, payload)

    def counting_recv(sock):
        header, payload = real_recv(sock)
        received.append((header["type"], len(payload)))
        return header, payload

    monkeypatch.setattr(parallel, "send_frame", counting_send)  # driver side (the workers' copies count alone)
    monkeypatch.setattr(parallel, "recv_frame", counting_recv)
    clients = list(range(9))
    initial = Shift(0).get_weights()
    strategy = fedloom.fedavg(fraction=1.0)
    engine = RoundEngine(strategy, initial)
    engine.register_clients((str(i), None) for i in clients)
    model_bytes = len(fedloom.to_bytes(initial))
    client_fn = shift_fn()
    pools: set[tuple[int, ...]] = set()
    with ParallelExecutor(2) as executor:
        for round_no in (1, 2, 3):
            sent.clear()
            received.clear()
            task = engine.open_round()
            configs = {cid: engine.fit_config(cid) for cid in task.selected}
            results = list(executor.run_round(task.round, task.global_weights, configs, client_fn, merge=True))
            pools.add(tuple(worker_pids()))

            assert all(isinstance(r, MergedUpdates) for r in results)
            assert len(results) == 2  # one partial sum per worker, not one update per client
            covered = sorted(r.client_id for m in results for r in m.reports)
            assert covered == sorted(task.selected)
            for merged in results:
                assert merged.partial.count == len(merged.reports)
                assert merged.partial.total_weight == sum(r.num_samples for r in merged.reports)
                assert all(r.round == round_no for r in merged.reports)
            # The global model went to each worker exactly once; fits carry no tensors.
            assert [n for kind, n in sent if kind == "round"] == [model_bytes, model_bytes]
            assert sorted(n for kind, n in sent if kind == "fit") == [0] * len(clients)
            # What came back: 9 tensor-free reports and 2 float64 partial sums.
            assert [n for kind, n in received if kind == "fitted"] == [0] * len(clients)
            partial_bytes = [n for kind, n in received if kind == "partial"]
            assert len(partial_bytes) == 2 and all(n < 2.5 * model_bytes for n in partial_bytes)
            assert sum(n for _, n in received) < 5 * model_bytes  # vs 9 x model without pre-merging

            for merged in results:
                engine.submit_merged(merged.reports, merged.partial)
            before = engine.global_weights
            outcome = engine.close_round()
            assert outcome.num_updates == len(clients)
            assert_weights_close(outcome.weights, expected_mean(before, clients), atol=1e-5)
            assert outcome.client_metrics["loss"] == pytest.approx(
                sum(i * (i + 1) for i in clients) / sum(i + 1 for i in clients)
            )
    assert len(pools) == 1  # the same two workers served every round


def test_a_single_client_round_uses_only_the_worker_that_got_it():
    initial = Shift(0).get_weights()
    with ParallelExecutor(3) as executor:
        results = list(executor.run_round(1, initial, configs_for([4]), shift_fn(), merge=True))
    assert len(results) == 1 and isinstance(results[0], MergedUpdates)
    assert [r.client_id for r in results[0].reports] == ["4"]
    assert_weights_close(results[0].partial.result(), expected_mean(initial, [4]))


def test_merged_aggregate_equals_sequential_aggregate():
    clients = list(range(13))
    initial = {"w": np.linspace(-1, 1, MODEL_SIZE, dtype=np.float32), "b": np.ones((2, 3), np.float32)}
    sequential = list(SequentialExecutor().run_round(1, initial, configs_for(clients), shift_fn()))
    with ParallelExecutor(2) as executor:
        merged = list(executor.run_round(1, initial, configs_for(clients), shift_fn(), merge=True))
    seq_weights, seq_covered = aggregate(sequential, initial)
    par_weights, par_covered = aggregate(merged, initial)
    assert sorted(par_covered) == sorted(seq_covered) == sorted(str(i) for i in clients)
    assert_weights_close(par_weights, seq_weights, atol=1e-6)
    assert_weights_close(par_weights, expected_mean(initial, clients), atol=1e-5)


# ----------------------------------------------------------------------------- merge=False: every update


@dataclasses.dataclass(frozen=True)
class NeedsEveryUpdate:
    """A weighted mean that claims not to be mergeable (like median or Krum would)."""

    name: str = "weighted_mean_unmerged"
    mergeable: bool = False

    def start(self, reference):
        return WeightedMeanAccumulator(reference)


def test_unmergeable_aggregator_receives_one_update_per_client():
    clients = list(range(7))
    initial = Shift(0).get_weights()
    with ParallelExecutor(2) as executor:
        results = list(executor.run_round(1, initial, configs_for(clients), shift_fn(), merge=False))
    assert not any(isinstance(r, MergedUpdates) for r in results)
    assert sorted(r.client_id for r in results) == sorted(str(i) for i in clients)
    for update in results:
        i = int(update.client_id)
        assert update.num_samples == i + 1 and update.metrics == {"loss": float(i)}
        assert_weights_close(update.weights, {k: v + i + 1 for k, v in initial.items()}, atol=0)


def test_unmergeable_strategy_through_simulate_matches_sequential():
    strategy = dataclasses.replace(fedloom.fedavg(fraction=0.5), aggregator=NeedsEveryUpdate())
    runs = [
        fedloom.simulate(shift_fn(), 8, strategy, 3, seed=1, **QUIET, executor=executor)
        for executor in (None, ParallelExecutor(2))
    ]
    assert [s.num_updates for s in runs[1].history] == [4, 4, 4]
    assert_weights_close(runs[1].final_weights, runs[0].final_weights, atol=1e-5)


# ----------------------------------------------------------------------------- failures: exceptions


def explode_in_fit(index: int, round: int) -> None:
    if index == 3:
        raise ValueError(f"bad batch in client {index}")


@pytest.mark.parametrize("merge", [True, False])
def test_trainer_exception_is_reported_and_the_worker_goes_on(merge):
    clients = list(range(8))
    initial = Shift(0).get_weights()
    client_fn = shift_fn(explode_in_fit)
    with ParallelExecutor(2) as executor:
        results = list(executor.run_round(1, initial, configs_for(clients), client_fn, merge))
        pids_after_first = worker_pids()
        again = list(executor.run_round(2, initial, configs_for(clients, 2), client_fn, merge))
        assert worker_pids() == pids_after_first  # an exception never costs a worker
    [failure] = failures(results)
    assert failure.client_id == "3" and failure.round == 1 and failure.code == "client_failed"
    assert failure.message == "ValueError: bad batch in client 3"
    assert "Traceback" in failure.details and "explode_in_fit" in failure.details
    weights, covered = aggregate(results, initial)
    survivors = [i for i in clients if i != 3]
    assert sorted(covered) == sorted(str(i) for i in survivors)
    assert_weights_close(weights, expected_mean(initial, survivors))
    assert [f.client_id for f in failures(again)] == ["3"]


def test_simulate_fails_clearly_on_a_raising_trainer_and_stops_its_workers():
    seen: list[list[int]] = []

    def evaluate(weights):
        seen.append(worker_pids())
        return {}

    def explode_in_round_two(index: int, round: int) -> None:
        if index == 3 and round == 2:
            raise ValueError("bad batch")

    with pytest.raises(ClientError, match=r"client 3 failed in round 2: ValueError: bad batch(.|\n)*Traceback"):
        fedloom.simulate(
            shift_fn(explode_in_round_two),
            6,
            fedloom.fedavg(fraction=1.0),
            3,
            evaluation=fedloom.Evaluation(evaluate),
            executor=ParallelExecutor(2),
            **QUIET,
        )
    assert len(seen) == 1 and len(seen[0]) == 2
    assert multiprocessing.active_children() == []
    assert _wait_gone(seen[0]) == []


class BigModel:
    """8 MB updates: far more than a socket buffer, so a worker blocks until its result is read."""

    def __init__(self, index: int) -> None:
        self.index = index

    def get_weights(self):
        return {"w": np.zeros(2_000_000, np.float32)}

    def fit(self, weights, config: FitConfig) -> FitResult:
        if self.index == 0:
            raise ValueError("bad batch")
        time.sleep(0.2)  # let client 0's failure reach the driver first
        return FitResult(dict(weights), 1, {})

    def evaluate(self, weights, config: EvalConfig) -> dict[str, float]:
        return {}


def test_a_failing_run_does_not_wait_on_workers_blocked_sending_results():
    strategy = dataclasses.replace(fedloom.fedavg(fraction=1.0), aggregator=NeedsEveryUpdate())
    started = time.monotonic()
    with pytest.raises(ClientError, match="client 0 failed in round 1"):
        fedloom.simulate(BigModel, 3, strategy, 1, executor=ParallelExecutor(3), **QUIET)
    assert time.monotonic() - started < 3  # was 5 s per blocked worker before close() closed the sockets


# ----------------------------------------------------------------------------- failures: dead workers


def exit_with_3(index: int, round: int) -> None:
    if index == 5:
        os._exit(3)


def kill_myself(index: int, round: int) -> None:
    if index == 5:
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize(
    ("die", "how"),
    [(exit_with_3, "exited with code 3"), (kill_myself, "was killed by signal SIGKILL")],
)
def test_a_dying_worker_is_reported_and_replaced_and_its_merged_clients_rerun(die, how, merge, tmp_path):
    # Client 5 is the last one handed out, so its worker has already finished (and, with
    # merge=True, folded in) at least one other client when it dies: that work must be redone.
    clients = list(range(6))
    initial = Shift(0).get_weights()
    fits = tmp_path / "fits"

    def log_then_maybe_die(index: int, round: int) -> None:
        with fits.open("a") as f:
            f.write(f"{index}\n")
        die(index, round)

    with ParallelExecutor(2, max_retries=0) as executor:
        started = worker_pids()
        results = list(executor.run_round(1, initial, configs_for(clients), shift_fn(log_then_maybe_die), merge))
        replaced = worker_pids()
    trained = [int(line) for line in fits.read_text().split()]
    rerun = {i for i in trained if trained.count(i) > 1}
    assert rerun if merge else not rerun  # merged work is lost with its worker; sent updates are not
    assert 5 not in rerun
    [failure] = failures(results)
    assert failure.client_id == "5" and failure.round == 1
    assert how in failure.message and failure.message.endswith("while training client 5")
    assert "no Python traceback" in failure.details
    assert started == [] and len(replaced) == 2  # the pool is back to full strength
    weights, covered = aggregate(results, initial)
    survivors = [i for i in clients if i != 5]
    assert sorted(covered) == sorted(str(i) for i in survivors)  # each survivor exactly once
    assert_weights_close(weights, expected_mean(initial, survivors))


def test_simulate_survives_a_killed_worker_with_the_sequential_aggregate_of_the_survivors():
    def raise_instead(index: int, round: int) -> None:  # what a dead client amounts to for the sequential reference
        if index == 5:
            raise RuntimeError("client 5 died")

    tolerant = fedloom.fedavg(fraction=1.0, criteria=fedloom.RoundCriteria(threshold=0.5))
    common = {"seed": 2, "environment": fedloom.Environment(on_client_error="skip"), **QUIET}
    reference = fedloom.simulate(shift_fn(raise_instead), 8, tolerant, 2, **common)
    survived = fedloom.simulate(shift_fn(kill_myself), 8, tolerant, 2, executor=ParallelExecutor(2), **common)
    assert [s.num_updates for s in survived.history] == [7, 7]
    assert [s.num_samples for s in survived.history] == [s.num_samples for s in reference.history]
    assert_weights_close(survived.final_weights, reference.final_weights, atol=1e-5)


def test_a_worker_dying_on_first_attempt_is_retried(tmp_path):
    marker = tmp_path / "died-once"

    def die_once(index: int, round: int) -> None:
        if index == 2:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # second attempt: train normally
            os._exit(3)

    strategy = fedloom.fedavg(fraction=1.0)
    reference = fedloom.simulate(shift_fn(), 5, strategy, 2, **QUIET)
    result = fedloom.simulate(shift_fn(die_once), 5, strategy, 2, executor=ParallelExecutor(2, max_retries=1), **QUIET)
    assert marker.exists()  # it really died once
    assert [s.num_updates for s in result.history] == [5, 5]
    assert_weights_close(result.final_weights, reference.final_weights, atol=1e-5)


def test_retries_are_bounded_then_reported(tmp_path):
    attempts = tmp_path / "attempts"

    def always_die(index: int, round: int) -> None:
        if index == 1:
            with attempts.open("a") as f:
                f.write("x")
            os._exit(4)

    with ParallelExecutor(2, max_retries=2) as executor:
        results = list(executor.run_round(1, Shift(0).get_weights(), configs_for([0, 1, 2]), shift_fn(always_die)))
    [failure] = failures(results)
    assert failure.client_id == "1" and "exited with code 4 while training client 1" in failure.message
    assert attempts.read_text() == "xxx"  # 1 try + 2 retries
    assert sorted(r.client_id for r in results if not isinstance(r, ClientFailure)) == ["0", "2"]


def test_a_worker_dying_while_flushing_its_partial_sum_loses_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "flush-died"
    real_partial_sums = WeightedMeanAccumulator.partial_sums

    def die_on_first_flush(self):  # only ever called in the workers
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return real_partial_sums(self)
        os._exit(7)

    monkeypatch.setattr(WeightedMeanAccumulator, "partial_sums", die_on_first_flush)
    initial = Shift(0).get_weights()
    for clients in ([0, 1], list(range(7))):
        marker.unlink(missing_ok=True)
        with ParallelExecutor(2) as executor:
            results = list(executor.run_round(1, initial, configs_for(clients), shift_fn(), merge=True))
        assert marker.exists()
        assert failures(results) == []
        weights, covered = aggregate(results, initial)
        assert sorted(covered) == sorted(str(i) for i in clients)
        assert_weights_close(weights, expected_mean(initial, clients))


# ----------------------------------------------------------------------------- failures: hanging clients


def hang_forever(index: int, round: int) -> None:
    if index == 2:
        time.sleep(3600)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("merge", [True, False])
def test_a_hanging_client_times_out_instead_of_hanging_the_run(merge):
    # Client 2 goes to a worker that has already finished one client: with merge=True that
    # folded-in work dies with the killed worker and must be redone.
    initial = Shift(0).get_weights()
    started = time.monotonic()
    with ParallelExecutor(2, client_timeout=2) as executor:
        results = list(executor.run_round(1, initial, configs_for(list(range(5))), shift_fn(hang_forever), merge))
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 8
    [failure] = failures(results)
    assert failure.client_id == "2" and "exceeded client_timeout=2s" in failure.message
    weights, covered = aggregate(results, initial)
    assert sorted(covered) == ["0", "1", "3", "4"]
    assert_weights_close(weights, expected_mean(initial, [0, 1, 3, 4]))


@pytest.mark.timeout(30)
def test_simulate_with_a_hanging_client_fails_within_bounded_time():
    started = time.monotonic()
    with pytest.raises(ClientError, match=r"client 2 failed in round 1: client 2 exceeded client_timeout=2"):
        fedloom.simulate(
            shift_fn(hang_forever),
            4,
            fedloom.fedavg(fraction=1.0),
            2,
            executor=ParallelExecutor(2, client_timeout=2),
            **QUIET,
        )
    assert time.monotonic() - started < 10


# ----------------------------------------------------------------------------- lifecycle


def test_close_twice_and_reuse_after_close():
    executor = ParallelExecutor(2)
    initial = Shift(0).get_weights()
    assert list(executor.run_round(1, initial, configs_for([0, 1, 2]), shift_fn()))
    pids = worker_pids()
    assert len(pids) == 2
    executor.close()
    executor.close()
    assert multiprocessing.active_children() == [] and _wait_gone(pids) == []
    results = list(executor.run_round(2, initial, configs_for([0, 1], 2), shift_fn()))  # starts a fresh pool
    assert sorted(r.client_id for r in results) == ["0", "1"]
    assert set(worker_pids()).isdisjoint(pids)
    executor.close()


def fail_fast_then_slow(index: int, round: int) -> None:
    if index == 0:
        raise ValueError("first result is a failure")
    time.sleep(0.05)  # the others are still in flight when the caller walks away


@pytest.mark.parametrize("merge", [True, False])
def test_a_round_abandoned_half_way_does_not_garble_the_next(merge):
    initial = Shift(0).get_weights()
    client_fn = shift_fn(fail_fast_then_slow)
    with ParallelExecutor(2) as executor:
        abandoned = executor.run_round(1, initial, configs_for(list(range(6))), client_fn, merge)
        assert isinstance(next(abandoned), ClientFailure)
        del abandoned  # e.g. the caller raised on that failure
        results = list(executor.run_round(2, initial, configs_for([1, 2, 3], 2), client_fn, merge))
    weights, covered = aggregate(results, initial)
    assert failures(results) == [] and sorted(covered) == ["1", "2", "3"]
    reports = [r for m in results if isinstance(m, MergedUpdates) for r in m.reports]
    assert all(u.round == 2 for u in [*reports, *(r for r in results if not isinstance(r, MergedUpdates))])
    assert_weights_close(weights, expected_mean(initial, [1, 2, 3]))


def test_every_client_dying_ends_the_round_with_failures_not_a_hang():
    def always_exit(index: int, round: int) -> None:
        os._exit(9)

    with ParallelExecutor(2, max_retries=1) as executor:
        results = list(
            executor.run_round(1, Shift(0).get_weights(), configs_for(list(range(4))), shift_fn(always_exit), True)
        )
        assert len(worker_pids()) == 2
    assert sorted(f.client_id for f in failures(results)) == ["0", "1", "2", "3"]
    assert all("exited with code 9" in f.message for f in failures(results))
    assert len(results) == 4


def test_a_new_client_fn_gets_a_fresh_pool():
    initial = Shift(0).get_weights()
    with ParallelExecutor(2) as executor:
        list(executor.run_round(1, initial, configs_for([0, 1]), shift_fn()))
        first = worker_pids()
        list(executor.run_round(2, initial, configs_for([0, 1], 2), shift_fn()))
        second = worker_pids()
    assert set(first).isdisjoint(second) and _wait_gone(first) == []


def test_a_dropped_executor_lets_its_workers_exit():
    executor = ParallelExecutor(2)
    list(executor.run_round(1, Shift(0).get_weights(), configs_for([0, 1, 2]), shift_fn()))
    pids = worker_pids()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del executor  # no close(): its sockets are closed (with a warning, like a file) when it is collected
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert _wait_gone(pids) == []


_DRIVER = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, threading, time
    import numpy as np
    from fedloom.core import FitConfig, FitResult
    from fedloom.sim.parallel import ParallelExecutor

    busy = float(sys.argv[1])

    class Slow:
        def fit(self, weights, config):
            time.sleep(busy if config.round == 2 else 0)
            return FitResult(dict(weights), 1, {})

    executor = ParallelExecutor(2)
    weights = {"w": np.zeros(3, np.float32)}
    list(executor.run_round(1, weights, {"0": FitConfig(round=1)}, lambda i: Slow()))
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    if busy:  # leave both workers in the middle of a fit
        configs = {"0": FitConfig(round=2), "1": FitConfig(round=2)}
        run = executor.run_round(2, weights, configs, lambda i: Slow())
        threading.Thread(target=lambda: list(run), daemon=True).start()
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("busy_seconds", [0.0, 1.5])
def test_workers_exit_when_the_driver_is_killed(busy_seconds):
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(busy_seconds)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert _wait_gone(pids, seconds=10 + busy_seconds) == []
    assert "Traceback" not in proc.stderr


def test_settings_are_validated():
    assert ParallelExecutor().num_workers == default_workers() == len(os.sched_getaffinity(0))
    for bad in ({"workers": 0}, {"max_retries": -1}, {"client_timeout": 0}):
        with pytest.raises(ConfigError):
            ParallelExecutor(**bad)


def test_content_hash_of_reports_matches_the_update():
    initial = Shift(0).get_weights()
    with ParallelExecutor(2) as executor:
        [merged] = [r for r in executor.run_round(1, initial, configs_for([6]), shift_fn(), merge=True)]
    assert isinstance(merged, MergedUpdates)
    assert merged.reports[0].sha256 == content_hash({k: v + np.float32(7) for k, v in initial.items()})
