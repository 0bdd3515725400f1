"""Simulation resume: a run killed with SIGKILL mid-run and resumed ends where an uninterrupted one does."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from resume_job import JOB

import fedloom
from fedloom.cli.main import main
from fedloom.core.errors import ConfigError
from fedloom.core.reserved import model_part
from fedloom.sim.tasks import build_task, simulate_config
from fedloom.store import SqlStore

JOB_SCRIPT = Path(__file__).with_name("resume_job.py")


def _ended_rounds(home: Path) -> tuple[str | None, int]:
    """The run and its last ended round, read without a write lock (the job keeps writing)."""
    db = home / "fedloom.db"
    if not db.exists():
        return None, 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            runs = conn.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1").fetchall()
            if not runs:
                return None, 0
            query = "SELECT MAX(round) FROM rounds WHERE run_id = ? AND status IN ('closed', 'abandoned')"
            (done,) = conn.execute(query, (runs[0][0],)).fetchone()
            return runs[0][0], int(done or 0)
    except sqlite3.OperationalError:  # the schema is being created, or the file is busy
        return None, 0


def _read_ended(home: Path) -> tuple[str | None, int]:
    with SqlStore.open_default(home) as store:
        runs = store.list_runs()
        ended = [r.round for r in store.list_rounds(runs[0].id) if r.status in ("closed", "abandoned")]
        return runs[0].id, max(ended, default=0)


def kill_after(home: Path, executor: str, rounds_done: int) -> str:
    """Start the slow job, SIGKILL it once ``rounds_done`` rounds ended; returns its run id."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JOB_SCRIPT.parent), *sys.path])}
    job = subprocess.Popen([sys.executable, str(JOB_SCRIPT), str(home), executor], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run_id, done = _ended_rounds(home)
            if run_id and done >= rounds_done:
                break
            assert job.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)  # no chance to record anything more
    finally:
        job.wait(10)
    run_id, done = _read_ended(home)
    assert run_id is not None and rounds_done <= done < JOB.rounds, done
    return run_id


def final_model(home: Path, run_id: str) -> dict[str, np.ndarray]:
    with SqlStore.open_default(home) as store:
        assert store.get_run(run_id).status == "finished"
        assert [r.round for r in store.list_rounds(run_id)] == list(range(1, JOB.rounds + 1))  # each round once
        assert [m.round for m in store.list_global_models(run_id)] == list(range(1, JOB.rounds + 1))
        return model_part(store.load_global_model(run_id, JOB.rounds))


def test_a_killed_simulation_resumed_from_the_cli_ends_bitwise_identical(tmp_path):
    uninterrupted = simulate_config(JOB).final_weights
    run_id = kill_after(tmp_path / "home", "sequential", 3)
    assert main(["sim", "--resume", run_id[:8], "--home", str(tmp_path / "home")]) == 0
    resumed = final_model(tmp_path / "home", run_id)
    assert sorted(resumed) == sorted(uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_killed_parallel_simulation_resumes_within_float_tolerance(tmp_path):
    parallel = dataclasses.replace(JOB, executor="parallel", workers=2)
    uninterrupted = simulate_config(parallel).final_weights
    run_id = kill_after(tmp_path / "home", "parallel", 2)
    assert main(["sim", "--resume", run_id, "--home", str(tmp_path / "home")]) == 0
    resumed = final_model(tmp_path / "home", run_id)
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_python_resume_continues_with_the_same_client_fn(tmp_path):
    task = build_task(JOB)
    strategy = JOB.build_strategy()
    common = {"seed": JOB.seed, "initial_weights": task.initial_weights, "observers": []}
    common["environment"] = fedloom.Environment(client_sizes=task.client_sizes)
    reference = fedloom.simulate(task.client_fn, JOB.clients, strategy, 6, recording=fedloom.Recording(None), **common)
    with SqlStore.open_default(tmp_path / "home") as store:

        def stop_in_round_four(i: int) -> fedloom.Trainer:
            if len(store.list_global_models(store.list_runs()[0].id)) >= 3:
                raise KeyboardInterrupt  # Ctrl-C while round 4 trains
            return task.client_fn(i)

        with pytest.raises(KeyboardInterrupt):
            fedloom.simulate(stop_in_round_four, JOB.clients, strategy, 6, recording=fedloom.Recording(store), **common)
        run = store.list_runs()[0]
        assert run.status == "interrupted" and [r.round for r in store.list_rounds(run.id)] == [1, 2, 3]
        result = fedloom.simulate(
            task.client_fn, JOB.clients, strategy, 6, recording=fedloom.Recording(store, resume=run.id), **common
        )
        assert [s.round for s in result.history] == [4, 5, 6] and result.run_id == run.id
    for name, value in reference.final_weights.items():
        np.testing.assert_array_equal(result.final_weights[name], value)


def test_resume_refuses_what_it_cannot_continue_exactly(tmp_path, capsys):
    with SqlStore.open_default(tmp_path / "home") as store:
        finished = simulate_config(dataclasses.replace(JOB, rounds=2), store=store).run_id
        assert finished is not None
        with pytest.raises(ConfigError, match="is finished: there is nothing to resume"):
            simulate_config(dataclasses.replace(JOB, rounds=2), store=store, resume=finished)
        store.reopen_run(finished)
        with pytest.raises(ConfigError, match="was started with rounds = 2, not 3"):
            simulate_config(dataclasses.replace(JOB, rounds=3), store=store, resume=finished)
    assert main(["sim", "--resume", finished, "--rounds", "9", "--home", str(tmp_path / "home")]) == 1
    assert "--resume continues a run with its recorded settings; drop rounds" in capsys.readouterr().err
