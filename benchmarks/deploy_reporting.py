"""What reporting costs a deployment: rounds/minute with agents sending system metrics and logs vs not.

The same setup as :mod:`benchmarks.deploy_throughput` (the real ``fedloom server``
process on loopback, N asyncio agents speaking docs/protocol.md with httpx, a model of
``--model-mb`` MiB), run twice per repetition, side by side: agents that report (each
upload carries the ``system`` header field measured with the agent's own
:class:`~fedloom.client.round_meter.AgentRoundMeter`, and each round ships one
``POST /v1/logs`` batch of ``--log-lines`` records, as an agent's log shipper does
every few seconds), and agents that do not (``fedloom agent --no-system-metrics
--no-ship-logs``). The aggregator stores both kinds of rows in SQLite. Prints the ratio.

    python -m benchmarks.deploy_reporting --agents 10 --rounds 3 --model-mb 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.deploy_throughput import ROOT, start_server, wait_port
from fedloom.client.round_meter import AgentRoundMeter
from fedloom.core import from_bytes, to_bytes
from fedloom.core.system_metrics import system_metrics_json
from fedloom.store import SqlStore


async def agent(url: str, token: str, name: str, reporting: bool, log_lines: int) -> None:
    meter = AgentRoundMeter(enabled=reporting)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=2)) as client:
        reply = (await client.post("/v1/agents/register", json={"name": name, "join_token": token})).json()
        agent_id, headers = reply["agent_id"], {"Authorization": f"Bearer {reply['credential']}"}
        while True:
            task = (await client.get("/v1/task", params={"wait": 30}, headers=headers)).json()
            if task["state"] == "finished":
                return
            if task["state"] != "train":
                continue
            meter.selected()
            fetch = time.monotonic()
            weights, _ = from_bytes(
                (await client.get(f"/v1/models/global/{task['global_round']}", headers=headers)).content
            )
            meter.downloaded(time.monotonic() - fetch, weights)
            update = {k: v + np.float32(0.001) for k, v in weights.items()}
            meter.trained(0.0)
            extra = {"metrics": "{}"}
            if reporting:
                extra["system"] = system_metrics_json(meter.report(update))
            payload = to_bytes(update, round=task["round"], client_id=agent_id, num_samples=100, extra=extra)
            sent = time.monotonic()
            (await client.post("/v1/updates", content=payload, headers=headers)).raise_for_status()
            meter.uploaded(time.monotonic() - sent)
            if reporting:
                lines = [
                    {
                        "created_at": time.time(),
                        "level": "INFO",
                        "logger": "fedloom.agent",
                        "message": f"round {task['round']} line {i}",
                    }
                    for i in range(log_lines)
                ]
                (await client.post("/v1/logs", json={"records": lines}, headers=headers)).raise_for_status()


def measure(agents: int, rounds: int, model_mb: float, reporting: bool, log_lines: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        initial = home / "initial.safetensors"
        initial.write_bytes(to_bytes({"w": np.zeros(int(model_mb * 2**20 / 4), np.float32)}))
        with SqlStore.open_default(home) as store:
            token = store.create_token("bench", role="agent", max_agents=agents)
        server = start_server(home, agents, rounds, initial)
        try:
            url = f"http://127.0.0.1:{wait_port(home, server)}"
            started = time.perf_counter()

            async def everyone() -> None:
                await asyncio.gather(*(agent(url, token, f"bench-{i}", reporting, log_lines) for i in range(agents)))

            asyncio.run(everyone())
            seconds = time.perf_counter() - started
        except Exception:
            print(f"aggregator log (tail):\n{(home / 'server.log').read_text()[-4000:]}", flush=True)
            raise
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        with SqlStore.open_default(home) as store:
            run_id = store.list_runs(limit=1)[0].id
            system_rows = len(store.metrics(run_id, scope="system"))
            log_rows = len(store.agent_logs(run_id, limit=10**6))
    return {"reporting": reporting, "seconds": seconds, "rounds_per_minute": 60 * rounds / seconds,
            "system_rows": system_rows, "log_rows": log_rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model-mb", type=float, default=1.0)
    p.add_argument("--log-lines", type=int, default=20, help="log records each agent ships per round")
    p.add_argument("--repeats", type=int, default=2, help="off/on pairs, alternated")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deploy_reporting.json"))
    args = p.parse_args()
    command = "python -m benchmarks.deploy_reporting " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {command}", flush=True)
    rows = []
    for _ in range(args.repeats):
        for reporting in (False, True):
            rows.append(measure(args.agents, args.rounds, args.model_mb, reporting, args.log_lines))
            print(json.dumps(rows[-1]), flush=True)
    best = {flag: max(r["rounds_per_minute"] for r in rows if r["reporting"] is flag) for flag in (False, True)}
    ratio = best[True] / best[False]
    print(f"{args.agents} agents: {best[False]:.1f} rounds/min without reporting, {best[True]:.1f} with: {ratio:.3f}")
    setup = {"agents": args.agents, "rounds": args.rounds, "model_mib": args.model_mb, "log_lines": args.log_lines}
    summary = {**setup, "rounds_per_minute_off": best[False], "rounds_per_minute_on": best[True], "ratio_on_off": ratio}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": "deploy_reporting", "command": command, "summary": summary, "runs": rows}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
