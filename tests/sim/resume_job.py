"""A simulation slow enough to be killed mid-run (run as a script by test_resume.py).

``python resume_job.py HOME EXECUTOR``: the digits task of ``JOB`` recorded in HOME, each
round slowed down by a sleep (an executor wrapper: the results are those of the executor).
"""

from __future__ import annotations

import dataclasses
import sys
import time

from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import make_executor, simulate_config
from fedloom.store import SqlStore

JOB = SimConfig(dataset="digits", clients=10, fraction=0.5, rounds=8, lr=0.5, batch_size=16, seed=1, name="resumable")


class Slow:
    """Sleeps before each round, then runs the real executor."""

    def __init__(self, inner, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def run_round(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.inner.run_round(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


if __name__ == "__main__":
    home, executor = sys.argv[1], sys.argv[2]
    job = dataclasses.replace(JOB, executor=executor, workers=2 if executor == "parallel" else 0)
    with SqlStore.open_default(home) as store:
        simulate_config(job, store=store, executor=Slow(make_executor(job), 0.4))
