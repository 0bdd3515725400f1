"""Flower's simulation (Ray backend, one CPU per client) running exactly the plain per-client work.

Runs in its own virtualenv with flwr[simulation]; fedloom is never imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import torch
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation

from benchmarks.simbench import plain

ARGS: argparse.Namespace
ACCURACY: list[float] = []


class PlainClient(NumPyClient):
    def __init__(self, partition_id: int) -> None:
        torch.set_num_threads(1)  # one CPU per client, as the backend is told
        w = plain.WORKLOADS[ARGS.workload]
        self.model = plain.build_model(str(w["model"]))
        self.lr = float(w["lr"])
        x, y, _, _ = plain.load_fmnist(ARGS.data_dir)
        idx = plain.load_partitions(ARGS.partitions)[partition_id]
        self.x, self.y = x[idx], y[idx]
        self.partition_id = partition_id

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        plain.set_weights(self.model, parameters)
        seed = int(config.get("server_round", 0)) * 100003 + self.partition_id
        plain.train(self.model, self.x, self.y, self.lr, seed)
        return plain.get_weights(self.model), len(self.y), {}


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return PlainClient(int(context.node_config["partition-id"])).to_client()


def server_fn(context: Context) -> ServerAppComponents:
    w = plain.WORKLOADS[ARGS.workload]
    torch.manual_seed(plain.SEED)
    model = plain.build_model(str(w["model"]))
    _, _, xt, yt = plain.load_fmnist(ARGS.data_dir)

    def evaluate(server_round, parameters, config):  # type: ignore[no-untyped-def]
        if server_round == 0:
            return None
        plain.set_weights(model, parameters)
        loss, acc = plain.evaluate(model, xt, yt)
        ACCURACY.append(acc)
        print(f"flower round {server_round}: acc {acc:.4f} t={time.perf_counter():.1f}", flush=True)
        return loss, {"accuracy": acc}

    clients, per_round = int(w["clients"]), int(w["per_round"])
    strategy = FedAvg(
        fraction_fit=per_round / clients,
        fraction_evaluate=0.0,
        min_fit_clients=per_round,
        min_evaluate_clients=0,
        min_available_clients=clients,
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda r: {"server_round": r},
        initial_parameters=ndarrays_to_parameters(plain.get_weights(model)),
    )
    rounds = ARGS.rounds or int(w["rounds"])
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))


def main() -> None:
    global ARGS  # noqa: PLW0603 -- Flower builds clients and server from module-level functions
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--partitions", required=True)
    p.add_argument("--rounds", type=int)
    p.add_argument("--cpus", type=int, default=os.cpu_count())
    ARGS = p.parse_args()
    w = plain.WORKLOADS[ARGS.workload]
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=int(w["clients"]),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": ARGS.cpus, "include_dashboard": False},
        },
    )
    print("RESULT " + json.dumps({"accuracy": ACCURACY}))


if __name__ == "__main__":
    main()
