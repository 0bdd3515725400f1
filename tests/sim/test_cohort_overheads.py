"""The fixed costs around cohort training (issue 13, logreg-1000's profile): what a process pays once.

Measured in a fresh interpreter, since what a process has imported is the point.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fedloom

pytestmark = pytest.mark.torch

HERE = Path(__file__).resolve().parent


def fresh_interpreter(code: str) -> dict:
    """Run ``code`` in a new Python with this checkout's fedloom; its last line of output, as JSON."""
    paths = [str(Path(fedloom.__file__).resolve().parents[1]), str(HERE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, "-c", textwrap.dedent(code)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_process_first_cohort_does_not_import_torch_dynamo():
    """``torch.func.grad`` imports torch._dynamo (and sympy) at its first call: ~1-1.5 s of every process's
    start-up (each parallel worker's too). The probe and the cohort step use autograd through vmap instead."""
    got = fresh_interpreter(
        """
        import json, sys
        import torch
        from cohort_cases import client_fn_for, federation
        from fedloom import fedavg
        from fedloom.models import logistic_regression
        from fedloom.sim.cohort import runner
        from fedloom.sim.executor import ClientUpdate, SequentialExecutor

        cohorts, real = [], runner.train_cohort
        runner.train_cohort = lambda settings, jobs: cohorts.append(len(jobs)) or real(settings, jobs)

        model = logistic_regression((1, 8, 8), 3)
        initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        strategy = fedavg(1.0, 1, 1, 8, 0.1)
        configs = {str(i): strategy.client.fit_config(1, str(i), 0) for i in range(3)}
        make = client_fn_for(model, federation([12, 7, 20]))
        results = list(SequentialExecutor(3).run_round(1, initial, configs, make))
        print(json.dumps({"updates": sum(isinstance(r, ClientUpdate) for r in results), "cohorts": cohorts,
                          "dynamo": "torch._dynamo" in sys.modules}))
        """
    )
    assert got == {"updates": 3, "cohorts": [3], "dynamo": False}
