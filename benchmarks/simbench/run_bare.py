"""The compute floor: a hand-written FedAvg loop, one process, one thread, no framework."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.simbench import plain


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--partitions", required=True)
    p.add_argument("--rounds", type=int)
    args = p.parse_args()
    torch.set_num_threads(1)
    w = plain.WORKLOADS[args.workload]
    rounds = args.rounds or int(w["rounds"])
    x, y, xt, yt = plain.load_fmnist(args.data_dir)
    parts = plain.load_partitions(args.partitions)
    torch.manual_seed(plain.SEED)
    model = plain.build_model(str(w["model"]))
    global_w = plain.get_weights(model)
    accuracy = []
    for r in range(rounds):
        chosen, seeds = plain.load_schedule(args.partitions, r + 1)
        sums = [np.zeros_like(a, dtype=np.float64) for a in global_w]
        total = 0
        for c, seed in zip(chosen, seeds, strict=True):
            plain.set_weights(model, global_w)
            plain.train(model, x[parts[c]], y[parts[c]], float(w["lr"]), seed=int(seed))
            n = len(parts[c])
            for s, a in zip(sums, plain.get_weights(model), strict=True):
                s += n * a
            total += n
        global_w = [(s / total).astype(a.dtype) for s, a in zip(sums, global_w, strict=True)]
        plain.set_weights(model, global_w)
        accuracy.append(plain.evaluate(model, xt, yt)[1])
        print(f"bare round {r + 1}: acc {accuracy[-1]:.4f} t={time.perf_counter():.1f}", flush=True)
    print("RESULT " + json.dumps({"accuracy": accuracy}))


if __name__ == "__main__":
    main()
