"""fedloom.light needs only NumPy and the standard library: a device process with httpx, safetensors,
FastAPI, PyTorch, SQLAlchemy, pydantic, psutil and every other fedloom package blocked (a
``sys.meta_path`` finder that raises on them) registers, trains and uploads through a whole run
against a real aggregator, and ends holding the final global model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from aggregator_helpers import config
from light_site import initial_model
from live_server import serving

import fedloom
from fedloom.light import decode
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app

HERE = Path(__file__).resolve().parent
SRC = Path(fedloom.__file__).resolve().parents[1]

DEVICE = r"""
import sys
BLOCKED = {"httpx", "torch", "fastapi", "safetensors", "sqlalchemy", "pydantic", "uvicorn", "starlette",
           "psutil", "requests", "sklearn", "scipy"}

def forbidden(name):
    return name.split(".")[0] in BLOCKED or (name.startswith("fedloom.") and not name.startswith("fedloom.light"))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if forbidden(name):
            raise ImportError(f"the light agent must not import {name}")
        return None

sys.meta_path.insert(0, Blocker())
from fedloom.light.__main__ import main
code = main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if forbidden(m))
print("LEAKED", leaked, flush=True)
sys.exit(code or (1 if leaked else 0))
"""


def test_a_light_device_runs_a_whole_run_with_only_numpy_and_the_standard_library(store, tmp_path):
    agg = Aggregator(
        config(min_agents=1, max_rounds=2, batch_size=10_000, linger_seconds=0.0),
        store,
        initial_weights=initial_model(),
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}", "FEDLOOM_AGENT_TOKEN": store.create_token("dev")}
    with serving(create_app(agg)) as url:
        argv = [
            "--server",
            url,
            "--name",
            "dev",
            "--state-dir",
            str(tmp_path / "dev"),
            "--poll-wait",
            "0.5",
            "--trainer",
            "light_site:make_trainer",
            "--trainer-arg",
            "site=2",
        ]
        done = subprocess.run(
            [sys.executable, "-c", DEVICE, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout and "fedloom-light: finished" in done.stderr
    assert [r.status for r in store.list_rounds(agg.run_id)] == ["closed", "closed"]
    final = store.load_global_model(agg.run_id, 2)
    kept = decode((tmp_path / "dev" / "global.safetensors").read_bytes()).weights
    for name in final:
        np.testing.assert_array_equal(kept[name], final[name])


def test_the_blocker_would_catch_a_forbidden_import(tmp_path):
    """The finder is live: the same process cannot import fedloom.core (the check above can fail)."""
    code = DEVICE.split("from fedloom.light.__main__", maxsplit=1)[0] + "import fedloom.core\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "must not import fedloom.core" in done.stderr
