"""The fixed costs around cohort training (issue 13, logreg-1000's profile): what a process pays once.

Measured in a fresh interpreter, since what a process has imported is the point.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

import fedloom
from fedloom import fedavg
from fedloom.core.fit import FitResult
from fedloom.store import SqlStore

HERE = Path(__file__).resolve().parent


def fresh_interpreter(code: str) -> dict:
    """Run ``code`` in a new Python with this checkout's fedloom; its last line of output, as JSON."""
    paths = [str(Path(fedloom.__file__).resolve().parents[1]), str(HERE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, "-c", textwrap.dedent(code)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.torch
def test_a_process_first_cohort_does_not_import_torch_dynamo():
    """``torch.func.grad`` imports torch._dynamo (and sympy) at its first call: ~1-1.5 s of every process's
    start-up (each parallel worker's too); cross-entropy under vmap imports sympy (~0.35 s). The probe and
    the cohort step use autograd through the vmapped forward, and the ordinary cross-entropy kernel."""
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
                          "dynamo": "torch._dynamo" in sys.modules, "sympy": "sympy" in sys.modules}))
        """
    )
    assert got == {"updates": 3, "cohorts": [3], "dynamo": False, "sympy": False}


class Counters:
    """Weights as real models carry them: float32 and float64 tensors with huge and tiny values, a 0-d
    int64 counter like BatchNorm's num_batches_tracked; client i moves each by a value of its own."""

    def __init__(self, index: int) -> None:
        self.index = index

    def get_weights(self):
        return {
            "w": np.array([1e-30, -3.5, 1e30], np.float32),
            "w64": np.array([[1e-300, 5e-324], [-1e300, 0.1]], np.float64),
            "num_batches_tracked": np.array(0, np.int64),
        }

    def fit(self, weights, config):
        i = self.index + 1
        trained = {
            "w": weights["w"] * np.float32(1 + i / 8),
            "w64": weights["w64"] * (1 + i / 1024),
            "num_batches_tracked": np.array(int(weights["num_batches_tracked"]) + i, np.int64),
        }
        return FitResult(trained, i, {"loss": 1.0 / i, "local_steps": float(i)})

    def evaluate(self, weights, config):
        return {"loss": 0.0, "num_samples": 1.0}


def commits_of(clients: int, tmp_path: Path, keep: bool = False) -> tuple[int, SqlStore, str]:
    """How many transactions a 2-round run of ``clients`` commits (the store and run, to read back)."""
    store = SqlStore.open_default(tmp_path / f"home-{clients}-{keep}")
    commits = []
    event.listen(store._engine, "commit", lambda connection: commits.append(1))
    result = fedloom.simulate(
        Counters,
        clients,
        fedavg(1.0, 1, 1, 8, 0.1),
        2,
        recording=fedloom.Recording(store=store, keep_local_models=keep),
        observers=[],
    )
    return len(commits), store, result.run_id


def test_a_simulated_round_writes_its_local_models_in_one_transaction_and_keeps_every_one(tmp_path):
    """Recording 1,000 updates one transaction each was 0.7 s of logreg-1000's 6 s: the round's buffer now
    writes them in one. The number of commits no longer grows with the clients; every update is kept."""
    small, store, _ = commits_of(4, tmp_path)
    store.close()
    large, store, run_id = commits_of(40, tmp_path)
    assert large == small  # one write per round for its updates, however many clients
    stored = store.list_local_models(run_id)
    assert [(m.round, m.client_id) for m in stored] == [(r, str(i)) for r in (1, 2) for i in sorted(range(40), key=str)]
    assert all(m.blob_key is None and m.sha256 for m in stored)  # keep_local_models off: hashes, no tensors
    assert {m.client_id: m.metrics["loss"] for m in stored if m.round == 1}["9"] == pytest.approx(0.1)
    store.close()


def test_kept_local_models_come_back_bitwise_with_their_dtypes(tmp_path):
    _, store, run_id = commits_of(5, tmp_path, keep=True)
    start = Counters(0).get_weights()
    for record, weights in store.load_local_models(run_id, 1):
        want = Counters(int(record.client_id)).fit(start, None).weights
        assert sorted(weights) == sorted(want)
        for name, value in want.items():
            assert weights[name].dtype == value.dtype and weights[name].shape == value.shape
            assert weights[name].tobytes() == value.tobytes(), name
    assert len(store.load_local_models(run_id, 2)) == 5
    store.close()
