"""Where the Ray executor's start-up goes: the profile behind its gap to the parallel executor.

Times, one after another in one process: building the built-in task, importing Ray,
starting a local Ray (``ray.init``), putting ``client_fn`` (with the dataset its closure
holds) in the object store, and the actors of one CPU each being ready (worker
processes started, PyTorch imported, ``client_fn`` taken from the object store).

    python -m benchmarks.ray_startup [--model logreg-torch|cnn] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="logreg-torch")
    p.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    marks: dict[str, float] = {}
    last = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        marks[name] = now - last
        last = now
        print(f"  {name}: {marks[name]:.2f} s", flush=True)

    from fedloom.sim.config import SimConfig
    from fedloom.sim.tasks import build_task

    config = SimConfig(dataset="fmnist", data_dir=args.data_dir, model=args.model, clients=100, partition="dirichlet")
    task = build_task(config)
    mark("build_task")
    import ray

    mark("import ray")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    mark("ray.init (local Ray)")
    from fedloom.sim.ray_resources import ClientResources
    from fedloom.sim.ray_slots import SlotPool

    pool = SlotPool(task.client_fn, ClientResources())
    mark("ray.put(client_fn)")
    pool.fill()
    ray.get([slot.actor.node.remote() for slot in pool.slots])
    mark(f"{len(pool.slots)} actors ready")
    pool.close()
    ray.shutdown()
    mark("shutdown")
    print("RESULT " + json.dumps(marks))


if __name__ == "__main__":
    main()
