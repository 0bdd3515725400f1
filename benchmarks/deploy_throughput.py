"""Aggregator throughput: N concurrent lightweight agents upload a 10 MB model every round.

The aggregator is the real `fedloom server` process on loopback (SQLite store, every
local model kept on disk, FedAvg); the agents are asyncio tasks in this process that
speak docs/protocol.md with httpx: long-poll the task, download the global model,
"train" (add a small delta), upload. Reports rounds/minute, upload MB/s and the
aggregator's peak RSS, for 10 and 100 agents, so the memory growth with the number of
agents is visible (a mean-type strategy must stay O(model), not O(agents x model)).

    python -m benchmarks.deploy_throughput                 # 10 and 100 agents, 3 rounds each
    python -m benchmarks.deploy_throughput --agents 10 --rounds 2 --model-mb 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from fedloom.core import from_bytes, to_bytes
from fedloom.store import SqlStore

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(home: Path, agents: int, rounds: int, initial: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "fedloom.cli.main", "server", "--home", str(home), "--port", "0",
        "--initial-model", str(initial), "--min-agents", str(agents), "--fraction", "1.0",
        "--max-rounds", str(rounds), "--deadline-seconds", "600", "--max-upload-mb", "64",
        "--check-interval-seconds", "0.2",
        # every agent registers at once from 127.0.0.1: one address, so the per-address
        # registration bucket must hold them all (the default 60 is for sites behind one NAT)
        "--rate-limit-burst", str(max(60, 2 * agents)), "--linger-seconds", "0",
    ]  # fmt: skip
    log = (home / "server.log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_port(home: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        port_file = home / "aggregator.port"
        if port_file.exists() and port_file.read_text().strip().isdigit():
            return int(port_file.read_text())
        if proc.poll() is not None:
            raise SystemExit(f"aggregator exited early:\n{(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.1)
    raise SystemExit("aggregator did not start in time")


class Counters:
    def __init__(self) -> None:
        self.uploaded_bytes = 0
        self.round_ends: dict[int, float] = {}


async def agent(url: str, token: str, name: str, counters: Counters) -> None:
    limits = httpx.Limits(max_connections=2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        reply = (await client.post("/v1/agents/register", json={"name": name, "join_token": token})).json()
        agent_id, headers = reply["agent_id"], {"Authorization": f"Bearer {reply['credential']}"}
        while True:
            task = (await client.get("/v1/task", params={"wait": 30}, headers=headers)).json()
            if task["state"] == "finished":
                return
            if task["state"] != "train":
                continue
            body = (await client.get(f"/v1/models/global/{task['global_round']}", headers=headers)).content
            weights, _ = from_bytes(body)
            update = {k: v + np.float32(0.001) for k, v in weights.items()}
            payload = to_bytes(
                update, round=task["round"], client_id=agent_id, num_samples=100, extra={"metrics": "{}"}
            )
            answer = await client.post("/v1/updates", content=payload, headers=headers)
            answer.raise_for_status()
            counters.uploaded_bytes += len(payload)
            counters.round_ends[task["round"]] = time.perf_counter()


async def run_agents(url: str, token: str, agents: int, counters: Counters) -> None:
    await asyncio.gather(*(agent(url, token, f"bench-{i}", counters) for i in range(agents)))


def measure(agents: int, rounds: int, model_mb: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        size = int(model_mb * 1024 * 1024 / 4)
        initial = home / "initial.safetensors"
        initial.write_bytes(to_bytes({"w": np.zeros(size, np.float32)}))
        with SqlStore.open_default(home) as store:
            token = store.create_token("bench", role="agent", max_agents=agents)  # one token, N agents
        server = start_server(home, agents, rounds, initial)
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib(server.pid))
                stop.wait(0.05)

        threading.Thread(target=sample, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{wait_port(home, server)}"
            idle = rss_mib(server.pid)
            counters = Counters()
            started = time.perf_counter()
            asyncio.run(run_agents(url, token, agents, counters))
            seconds = time.perf_counter() - started
        except Exception:
            print(f"aggregator log (tail):\n{(home / 'server.log').read_text()[-4000:]}", flush=True)
            raise
        finally:
            stop.set()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    return {
        "agents": agents,
        "rounds": rounds,
        "model_mib": model_mb,
        "seconds": seconds,
        "rounds_per_minute": 60 * rounds / seconds,
        "upload_mib_per_s": counters.uploaded_bytes / 2**20 / seconds,
        "aggregator_idle_rss_mib": idle,
        "aggregator_peak_rss_mib": peak[0],
        "aggregator_peak_minus_idle_in_models": (peak[0] - idle) / model_mb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="10,100", help="comma list of agent counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model-mb", type=float, default=10.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deploy_throughput.json"))
    args = p.parse_args()
    command = "python -m benchmarks.deploy_throughput " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {command}", flush=True)
    rows = []
    for n in (int(x) for x in args.agents.split(",")):
        rows.append(measure(n, args.rounds, args.model_mb))
        r = rows[-1]
        print(
            f"{n:>4} agents: {r['rounds_per_minute']:.1f} rounds/min, {r['upload_mib_per_s']:.0f} MiB/s up, "
            f"aggregator RSS idle {r['aggregator_idle_rss_mib']:.0f} MiB, peak {r['aggregator_peak_rss_mib']:.0f} MiB "
            f"(+{r['aggregator_peak_minus_idle_in_models']:.1f} models)",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "deploy_throughput", "command": command, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
