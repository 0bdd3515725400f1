"""The cost of secure aggregation (SecAgg+) against plain FedAvg, per round.

For each model size (float32 parameters) and number of clients, one round with every
client delivering, side by side:

  plain FedAvg   client: serialise its model as fedloom safetensors; server: parse every
                 upload and fold it into the weighted mean. Bytes: the upload.
  SecAgg+        client: advertise keys, seal shares, quantise + mask its delta (self mask
                 and k pairwise masks, ChaCha20), answer the unmask request; server: take
                 and relay every message, rebuild the self masks from shares, unmask,
                 dequantise. Bytes: everything a client sends (keys, sealed shares, the
                 masked vector of 8-byte words, its shares at unmask) and the extra it
                 receives (neighbours' keys, shares, the unmask request), as raw bytes
                 (the JSON form base64-encodes them: x4/3).

The graph has k = min(n - 1, 2·ceil(log2 n)) neighbours (SecAgg+; --complete: SecAgg's
complete graph), threshold 2/3 of k, 24 bits, clip 1.0. Times are wall-clock seconds
on this machine; client time is the mean per client (clients run one after another in
this process), server time is for the whole round. Cells whose work (parameters x
clients) exceeds --cap are skipped and listed as such.

    python -m benchmarks.secagg_cost                         # 10k..10M params x 10/50/100 clients
    python -m benchmarks.secagg_cost --sizes 10000 --clients 10 --cap 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.algorithms.secagg.client import SecAggClient
from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.messages import SEALED_BYTES
from fedloom.algorithms.secagg.server import SecAggResult, SecAggServerRound
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.algorithms.secagg.shamir import SHARE_BYTES
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import validate_weights

RESULTS = Path(__file__).parent / "results" / "secagg_cost.json"
KEYS_BYTES = 64


def _plain(global_w: dict[str, np.ndarray], delta: Any, clients: int) -> dict[str, float]:
    """Each upload is made and folded in at once, so memory stays O(model) at 10M x 100."""
    client = server = 0.0
    acc = WeightedMeanAccumulator(global_w)
    size = 0
    for i in range(clients):
        local = {"w": global_w["w"] + delta(i)["w"]}
        start = time.perf_counter()
        payload = to_bytes(local, round=1, client_id=str(i), num_samples=100)
        client += time.perf_counter() - start
        size = len(payload)
        start = time.perf_counter()
        weights, _ = from_bytes(payload, max_bytes=len(payload))
        validate_weights(weights, global_w)
        acc.add(ClientUpdate(str(i), 1, weights, 100))
        server += time.perf_counter() - start
    start = time.perf_counter()
    acc.result()
    server += time.perf_counter() - start
    return {"client_s": client / clients, "server_s": server, "upload_bytes": float(size)}


class _Clock:
    def __init__(self) -> None:
        self.client = 0.0
        self.server = 0.0

    def run(self, side: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        setattr(self, side, getattr(self, side) + time.perf_counter() - start)
        return out


def _secagg(global_w: dict[str, np.ndarray], delta: Any, clients: int, settings: SecAggSettings) -> dict[str, float]:
    names = [f"c{i:03d}" for i in range(clients)]
    layout = RingLayout(global_w, settings)
    clock = _Clock()
    server = clock.run("server", SecAggServerRound, 1, names, settings, 0, layout)
    parties = {c: clock.run("client", SecAggClient, c, 1, names, settings, 0, layout) for c in names}
    for c in names:
        server.receive_keys(clock.run("client", parties[c].advertise_keys))
    clock.run("server", server.close_stage)
    for c in names:
        relay = clock.run("server", server.keys_for, c)
        clock.run("server", server.receive_shares, clock.run("client", parties[c].share_keys, relay))
    clock.run("server", server.close_stage)
    for i, c in enumerate(names):
        relay = clock.run("server", server.shares_for, c)
        masked = clock.run("client", parties[c].masked_input, delta(i), 100, relay)
        clock.run("server", server.receive_masked, masked)
    clock.run("server", server.close_stage)
    request = clock.run("server", server.unmask_request)
    for c in names:
        clock.run("server", server.receive_unmask, clock.run("client", parties[c].unmask, request))
    clock.run("server", server.close_stage)
    result = clock.run("server", server.aggregate)
    assert isinstance(result, SecAggResult), result
    k = server.graph.degree
    upload = KEYS_BYTES + k * SEALED_BYTES + 8 * layout.length + k * SHARE_BYTES
    download = k * KEYS_BYTES + k * SEALED_BYTES + sum(len(c) for c in names)
    return {
        "client_s": clock.client / len(names),
        "server_s": clock.server,
        "upload_bytes": float(upload),
        "extra_download_bytes": float(download),
        "neighbours": float(k),
        "threshold": float(server.threshold),
    }


def _cell(size: int, clients: int, complete: bool) -> dict[str, Any]:
    global_w = {"w": np.random.default_rng(size).normal(0, 0.1, size).astype(np.float32)}

    def delta(i: int) -> dict[str, np.ndarray]:  # made on demand: O(model) memory
        return {"w": np.random.default_rng([size, i]).normal(0, 0.01, size).astype(np.float32)}

    k = clients - 1 if complete else min(clients - 1, 2 * math.ceil(math.log2(clients)))
    settings = SecAggSettings(clip_range=1.0, bits=24, threshold=0.67, neighbours=k)
    plain = _plain(global_w, delta, clients)
    secure = _secagg(global_w, delta, clients, settings)
    ratio = {f"{key}_ratio": secure[key] / plain[key] for key in ("client_s", "server_s", "upload_bytes")}
    return {"params": size, "clients": clients, "plain": plain, "secagg": secure, **ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--cap", type=float, default=1e9, help="skip cells with params x clients above this (0: none)")
    parser.add_argument("--complete", action="store_true", help="SecAgg's complete graph instead of SecAgg+")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.secagg_cost " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(command, flush=True)
    cells, skipped = [], []
    for size in args.sizes:
        for clients in args.clients:
            if args.cap and size * clients > args.cap:
                skipped.append({"params": size, "clients": clients, "why": f"params x clients > cap {args.cap:g}"})
                print(f"{size:>10} params x {clients:>3} clients: skipped (cap)", flush=True)
                continue
            cell = _cell(size, clients, args.complete)
            cells.append(cell)
            p, s = cell["plain"], cell["secagg"]
            print(
                f"{size:>10} params x {clients:>3} clients (k={int(s['neighbours'])}): client {s['client_s']:.3f}s"
                f" vs {p['client_s']:.4f}s, server {s['server_s']:.2f}s vs {p['server_s']:.2f}s,"
                f" upload {s['upload_bytes'] / 1e6:.2f} MB vs {p['upload_bytes'] / 1e6:.2f} MB",
                flush=True,
            )
    report = {
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"bits": 24, "clip_range": 1.0, "threshold": 0.67, "complete_graph": args.complete},
        "cells": cells,
        "skipped": skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
