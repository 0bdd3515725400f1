"""The Ray executor on a real multi-node Ray cluster started on this machine.

One cluster for the module (``ray.cluster_utils.Cluster``): a head node with no CPUs (so
no client trains beside the driver) and two worker nodes of one CPU and 1 GB of memory
each. The task is the built-in digits / numpy logistic regression, a few clients, 2-3 rounds.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedloom.core import ConfigError, FitConfig
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import ClientFailure, ClientUpdate, MergedUpdates, SequentialExecutor
from fedloom.sim.tasks import build_task, make_executor, simulate_config
from fedloom.store import SqlStore

NODE_MEMORY = 10**9
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install 'fedloom[ray]'`")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1, memory=NODE_MEMORY) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.worker_nodes_at_start = workers
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def digits(**changes: Any) -> SimConfig:
    values: dict[str, Any] = {"dataset": "digits", "model": "logreg", "clients": 6, "rounds": 3, "seed": 7}
    return SimConfig(**{**values, **changes})


def ray_executor(**kwargs: Any) -> Any:
    from fedloom.sim.ray_executor import RayExecutor

    return RayExecutor(**kwargs)


class Recorded:
    """A client factory whose trainers note where and when each fit ran (JSON lines in ``path``);
    in ``slow_round`` every fit first sleeps ``sleep`` seconds (so it can be caught mid-fit)."""

    def __init__(self, client_fn: Callable[[int], Any], path: Path, sleep: float = 0.0, slow_round: int = 0) -> None:
        self.client_fn, self.path, self.sleep, self.slow_round = client_fn, str(path), sleep, slow_round

    def __call__(self, index: int) -> Any:
        return _RecordingTrainer(self.client_fn(index), self, str(index))


class _RecordingTrainer:
    def __init__(self, inner: Any, owner: Recorded, client_id: str) -> None:
        self.inner, self.owner, self.client_id = inner, owner, client_id

    def get_weights(self) -> Any:
        return self.inner.get_weights()

    def evaluate(self, weights: Any, config: Any) -> Any:
        return self.inner.evaluate(weights, config)

    def fit(self, weights: Any, config: FitConfig) -> Any:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "driver"
        entry = {"client": self.client_id, "round": config.round, "node": node, "pid": os.getpid()}
        self._note({**entry, "event": "start", "time": time.time()})
        if config.round == self.owner.slow_round or self.owner.slow_round < 0:
            time.sleep(self.owner.sleep)
        result = self.inner.fit(weights, config)
        self._note({**entry, "event": "end", "time": time.time()})
        return result

    def _note(self, entry: dict[str, Any]) -> None:
        with open(self.owner.path, "a") as out:
            out.write(json.dumps(entry) + "\n")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def intervals(path: Path) -> dict[str, list[tuple[float, float]]]:
    """node -> [(start, end)] of every completed fit."""
    starts: dict[tuple[str, int, int], float] = {}
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for entry in records(path):
        key = (entry["client"], entry["round"], entry["pid"])
        if entry["event"] == "start":
            starts[key] = entry["time"]
        else:
            out[entry["node"]].append((starts[key], entry["time"]))
    return out


def overlapping(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def assert_same_history(a: Any, b: Any, exact: bool, ignore: tuple[str, ...] = ()) -> None:
    assert [h.round for h in a.history] == [h.round for h in b.history]
    for x, y in zip(a.history, b.history, strict=True):
        assert (x.num_selected, x.num_updates, x.num_samples) == (y.num_selected, y.num_updates, y.num_samples)
        ours = {k: v for k, v in y.metrics.items() if k not in ignore}
        assert sorted(x.metrics) == sorted(ours)
        for name, value in x.metrics.items():
            assert value == ours[name] if exact else value == pytest.approx(ours[name], rel=1e-6)


# ----------------------------------------------------------------------------- identical results


def test_unmerged_rounds_are_bitwise_identical_to_the_sequential_executor(cluster: Any) -> None:
    config = digits(aggregator="median", fraction=0.8)  # a robust rule: every update reaches the engine
    reference = simulate_config(config, executor=SequentialExecutor())
    on_ray = simulate_config(config, executor=ray_executor())
    for name, value in reference.final_weights.items():
        np.testing.assert_array_equal(on_ray.final_weights[name], value)
    assert_same_history(reference, on_ray, exact=True)


def test_merged_rounds_match_the_sequential_executor_with_one_partial_sum_per_node(cluster: Any) -> None:
    config = digits()
    reference = simulate_config(config, executor=SequentialExecutor())
    on_ray = simulate_config(config, executor=ray_executor())
    for name, value in reference.final_weights.items():
        np.testing.assert_allclose(on_ray.final_weights[name], value, rtol=1e-6, atol=1e-7)
    assert_same_history(reference, on_ray, exact=False)

    task = build_task(config)  # one round by hand: what reaches the driver
    configs = {str(i): FitConfig(round=1, epochs=1, batch_size=32, lr=0.05, seed=100 + i) for i in range(6)}
    with ray_executor() as executor:
        results = list(executor.run_round(1, task.initial_weights, configs, task.client_fn, merge=True))
    assert all(isinstance(r, MergedUpdates) for r in results)
    assert len(results) == 2  # one per worker node, combined there
    assert sorted(rep.client_id for r in results for rep in r.reports) == sorted(configs)
    unmerged = list(SequentialExecutor().run_round(1, task.initial_weights, configs, task.client_fn))
    samples = sum(u.num_samples for u in unmerged if isinstance(u, ClientUpdate))
    assert sum(r.partial.total_weight for r in results) == samples


def test_a_failing_trainer_is_reported_in_the_round_order_with_its_traceback(cluster: Any) -> None:
    task = build_task(digits())
    configs = {str(i): FitConfig(round=1, epochs=1, batch_size=32, lr=0.05, seed=i) for i in range(4)}
    failing = _FailsOn(task.client_fn, {"1", "2"})
    with ray_executor() as executor:
        results = list(executor.run_round(1, task.initial_weights, configs, failing, merge=False))
    assert [r.client_id for r in results] == ["0", "1", "2", "3"]  # the sequential order
    failures = [r for r in results if isinstance(r, ClientFailure)]
    assert [f.client_id for f in failures] == ["1", "2"]
    assert "RuntimeError: client 1 breaks" in failures[0].message
    assert "Traceback" in failures[0].details
    assert executor.retried == 0  # a trainer's own error is not retried


class _FailsOn:
    def __init__(self, client_fn: Callable[[int], Any], broken: set[str]) -> None:
        self.client_fn, self.broken = client_fn, broken

    def __call__(self, index: int) -> Any:
        if str(index) in self.broken:
            raise RuntimeError(f"client {index} breaks")
        return self.client_fn(index)


# ----------------------------------------------------------------------------- resources


def test_one_cpu_per_client_on_one_cpu_nodes_never_runs_two_clients_of_a_node_at_once(
    cluster: Any, tmp_path: Path
) -> None:
    config = digits(clients=8, rounds=2)
    task = build_task(config)
    path = tmp_path / "fits.jsonl"
    result = _run(config, Recorded(task.client_fn, path, sleep=0.15, slow_round=-1), ray_executor())
    assert result.history[-1].num_updates == 8
    spans = intervals(path)
    assert len(spans) == 2 and "driver" not in spans  # both worker nodes trained; the 0-CPU head none
    assert not any(overlapping(s) for s in spans.values())

    # half a CPU each: two clients per node at once (the same check sees them overlap)
    path2 = tmp_path / "half.jsonl"
    _run(config, Recorded(task.client_fn, path2, sleep=0.3, slow_round=-1), ray_executor(resources=_res(0.5)))
    assert any(overlapping(s) for s in intervals(path2).values())

    # half a CPU but 600 MB of each node's 1 GB: memory allows one client per node again
    path3 = tmp_path / "memory.jsonl"
    executor = ray_executor(resources=_res(0.5, memory="600MB"))
    _run(config, Recorded(task.client_fn, path3, sleep=0.15, slow_round=-1), executor)
    spans3 = intervals(path3)
    assert len(spans3) == 2 and not any(overlapping(s) for s in spans3.values())


def _res(cpus: float, gpus: float = 0.0, memory: str | None = None) -> Any:
    from fedloom.sim.ray_resources import ClientResources

    return ClientResources.from_flags(cpus, gpus, memory)


def _run(config: SimConfig, client_fn: Callable[[int], Any], executor: Any, store: Any = None) -> Any:
    """``simulate_config`` with another client_fn (the recording wrapper around the task's)."""
    from fedloom import Environment, Evaluation, Recording, simulate

    task = build_task(config)
    return simulate(
        client_fn,
        config.clients,
        config.build_strategy(),
        config.rounds,
        seed=config.seed,
        initial_weights=task.initial_weights,
        environment=Environment(client_sizes=task.client_sizes),
        evaluation=Evaluation(task.evaluate_fn),
        executor=executor,
        recording=Recording(store=store),
        observers=[],
    )


def test_resources_no_node_has_are_refused_naming_the_flags(cluster: Any) -> None:
    task = build_task(digits())
    configs = {"0": FitConfig(round=1, epochs=1, batch_size=32, lr=0.05, seed=0)}
    for resources, needed in [(_res(1, gpus=1), "1 GPU"), (_res(2), "2 CPU"), (_res(1, memory="2GB"), "memory")]:
        with ray_executor(resources=resources) as executor, pytest.raises(ConfigError) as caught:
            list(executor.run_round(1, task.initial_weights, configs, task.client_fn))
        assert needed in str(caught.value) and "--ray-gpus-per-client" in str(caught.value)


# ----------------------------------------------------------------------------- lost nodes


def test_a_node_removed_mid_round_has_its_clients_retried_on_the_others(cluster: Any, tmp_path: Path) -> None:
    import ray

    doomed = cluster.add_node(num_cpus=1, memory=NODE_MEMORY)
    cluster.wait_for_nodes()
    port = doomed.node_manager_port
    doomed_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerPort"] == port)
    config = digits(clients=9, rounds=3)
    task = build_task(config)
    path = tmp_path / "fits.jsonl"
    removed = threading.Event()

    def remove_when_busy() -> None:  # the moment a round-2 client starts on the doomed node
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e["round"] == 2 and e["node"] == doomed_id and e["event"] == "start" for e in records(path)):
                cluster.remove_node(doomed)
                removed.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=remove_when_busy, daemon=True)
    watcher.start()
    with SqlStore.open_default(tmp_path / "home") as store:
        result = _run(config, Recorded(task.client_fn, path, sleep=1.0, slow_round=2), ray_executor(), store)
        retried = store.metric_series(result.run_id, "clients_retried")
    watcher.join(timeout=5)
    assert removed.is_set(), "no round-2 client ever started on the node to remove"

    reference = simulate_config(config, executor=SequentialExecutor())
    for name, value in reference.final_weights.items():
        np.testing.assert_allclose(result.final_weights[name], value, rtol=1e-6, atol=1e-7)
    assert_same_history(reference, result, exact=False, ignore=("clients_retried",))
    assert [h.num_updates for h in result.history] == [9, 9, 9]
    assert [r for r, _ in retried] == [2] and retried[0][1] >= 1
    started_there = {e["client"] for e in records(path) if e["round"] == 2 and e["node"] == doomed_id}
    ended_elsewhere = {
        e["client"] for e in records(path) if e["round"] == 2 and e["event"] == "end" and e["node"] != doomed_id
    }
    assert started_there and started_there <= ended_elsewhere  # what the lost node held was re-run elsewhere


# ----------------------------------------------------------------------------- configuration


def test_without_ray_installed_the_executor_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    from fedloom.sim.ray_executor import RayExecutor

    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[ray\]'"):
        RayExecutor()
    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[ray\]'"):
        make_executor(SimConfig(dataset="digits", executor="ray"))


def test_ray_settings_are_checked_up_front() -> None:
    with pytest.raises(ConfigError, match=r"--ray-address.*add --executor ray"):
        SimConfig(ray_address="auto")
    with pytest.raises(ConfigError, match="ray_memory_per_client '2XB' is not a size"):
        SimConfig(executor="ray", ray_memory_per_client="2XB")
    with pytest.raises(ConfigError, match="some CPU or GPU"):
        SimConfig(executor="ray", ray_cpus_per_client=0)
    with pytest.raises(ConfigError, match="whole number of GPUs"):
        SimConfig(executor="ray", ray_gpus_per_client=1.5)
    with pytest.raises(ConfigError, match="--ray-cpus sizes a local Ray"):
        SimConfig(executor="ray", ray_address="auto", ray_cpus=2)
    assert SimConfig(executor="ray", ray_memory_per_client="512MiB").ray_resources().memory == 512 * 2**20
    assert SimConfig(executor="ray", ray_memory_per_client="2GB").ray_resources().memory == 2 * 10**9


# ----------------------------------------------------------------------------- the command line


def test_fedloom_sim_executor_ray_runs_on_the_cluster_and_records_its_settings(cluster: Any, tmp_path: Path) -> None:
    from fedloom.cli.main import main

    common = ["sim", "--dataset", "digits", "--clients", "4", "--rounds", "2", "--seed", "3"]
    ray_flags = ["--executor", "ray", "--ray-cpus-per-client", "0.5", "--ray-memory-per-client", "600MB"]
    assert main([*common, *ray_flags, "--home", str(tmp_path / "ray")]) == 0
    assert main([*common, "--home", str(tmp_path / "seq")]) == 0
    with SqlStore.open_default(tmp_path / "ray") as store:
        (run,) = store.list_runs()
        assert (run.config["executor"], run.config["ray_memory_per_client"]) == ("ray", "600MB")
        on_ray = store.metric_series(run.id, "accuracy")
    with SqlStore.open_default(tmp_path / "seq") as store:
        (run,) = store.list_runs()
        sequential = store.metric_series(run.id, "accuracy")
    assert [r for r, _ in on_ray] == [1, 2]
    assert [v for _, v in on_ray] == pytest.approx([v for _, v in sequential], abs=1e-6)


LOCAL_RAY = """
import sys
import ray
from fedloom.core import FitConfig
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task
from fedloom.sim.ray_executor import RayExecutor

task = build_task(SimConfig(dataset="digits", clients=3))
configs = {str(i): FitConfig(round=1, epochs=1, batch_size=32, lr=0.05, seed=i) for i in range(3)}
executor = RayExecutor(sys.argv[1]) if len(sys.argv) > 1 else RayExecutor(num_cpus=1)
results = list(executor.run_round(1, task.initial_weights, configs, task.client_fn))
alive = sum(node["Alive"] for node in ray.nodes())
print("nodes", alive, "cpus", ray.cluster_resources()["CPU"], "results", len(results))
executor.close()
print("after close", ray.is_initialized())
"""


def test_without_an_address_a_local_ray_is_started_and_shut_down(cluster: Any, tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    command = [sys.executable, "-c", LOCAL_RAY]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nodes 1 cpus 1.0 results 3" in done.stdout  # its own one-node Ray of --ray-cpus CPUs, not the test's
    assert "after close False" in done.stdout


def test_ray_address_joins_a_running_cluster_and_leaves_it_running(cluster: Any, tmp_path: Path) -> None:
    import subprocess

    import ray

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    command = [sys.executable, "-c", LOCAL_RAY, cluster.address]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nodes 3 cpus 2.0 results 3" in done.stdout  # the test's head and two worker nodes
    assert "after close False" in done.stdout
    assert sum(node["Alive"] for node in ray.nodes()) == 3  # closing the executor left the cluster up
