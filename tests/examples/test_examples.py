"""Run every script in examples/ as a user would, and check it works and learns.

Each runs in a subprocess with its working directory and ``FEDLOOM_HOME`` in a temporary
folder, so nothing is ever written into the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")  # every example uses the digits dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACCURACY = re.compile(r"^final accuracy: ([0-9.]+)$", re.MULTILINE)


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/name`` with ``args``; return its stdout after checking it exited 0."""
    env = {**os.environ, "FEDLOOM_HOME": str(cwd / "fedloom-home-env")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def final_accuracy(stdout: str) -> float:
    found = ACCURACY.findall(stdout)
    assert found, f"no 'final accuracy: X' line in:\n{stdout}"
    return float(found[-1])


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding one quickstart run (its home, and the stdout of the run)."""
    cwd = tmp_path_factory.mktemp("quickstart")
    home = cwd / "home"
    return home, run_example("quickstart_numpy.py", "--home", str(home), cwd=cwd)


def test_every_example_has_a_docstring_and_a_readme_line() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for script in EXAMPLES.glob("*.py"):
        assert script.read_text().startswith('"""'), f"{script.name} needs a module docstring"
        assert script.name in readme, f"{script.name} is missing from examples/README.md"


def test_quickstart_without_home_writes_nothing(tmp_path: Path) -> None:
    stdout = run_example("quickstart_numpy.py", "--rounds", "10", cwd=tmp_path)
    assert final_accuracy(stdout) >= 0.8
    assert "run id" not in stdout
    assert list(tmp_path.iterdir()) == []


def test_quickstart_records_the_run(recorded_home: tuple[Path, str]) -> None:
    home, stdout = recorded_home
    assert final_accuracy(stdout) >= 0.85
    assert re.search(r"^run id: [0-9a-f]{32}$", stdout, re.MULTILINE)
    assert "fedloom runs show " in stdout
    assert (home / "fedloom.db").is_file()


def test_load_global_model_reads_the_recorded_run(recorded_home: tuple[Path, str]) -> None:
    home, quickstart_stdout = recorded_home
    run_id = re.findall(r"^run id: ([0-9a-f]{32})$", quickstart_stdout, re.MULTILINE)[0]
    stdout = run_example("load_global_model.py", "--home", str(home), cwd=home.parent)
    assert f"run {run_id}: global model of round 20" in stdout
    assert "recording one" not in stdout
    assert "tensor 'weight': shape [10, 64]" in stdout
    assert final_accuracy(stdout) == pytest.approx(final_accuracy(quickstart_stdout))


def test_load_global_model_records_a_run_when_the_store_is_empty(tmp_path: Path) -> None:
    stdout = run_example("load_global_model.py", "--home", str(tmp_path / "empty"), cwd=tmp_path)
    assert "recording one" in stdout
    assert final_accuracy(stdout) >= 0.85


@pytest.mark.torch
def test_custom_pytorch_trainer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    stdout = run_example("custom_pytorch_trainer.py", cwd=tmp_path)
    assert final_accuracy(stdout) >= 0.85
    assert list(tmp_path.iterdir()) == []


def test_compare_strategies_shows_scaffold_and_robust_aggregation_helping(tmp_path: Path) -> None:
    stdout = run_example("compare_strategies.py", cwd=tmp_path)
    skew, attack = stdout.split("20% attackers")
    rows = dict(re.findall(r"^  (\w+)\s+([0-9.]+)%$", skew, re.MULTILINE))
    assert float(rows["scaffold"]) > float(rows["fedavg"]) + 5  # label skew: 85% vs 73%
    attacked = dict(re.findall(r"^  (\w+)\s+([0-9.]+)%$", attack, re.MULTILINE))
    assert float(attacked["median"]) > float(attacked["fedavg"]) + 10  # 92% vs 60%
    assert final_accuracy(stdout) >= 0.85  # the geometric median under attack
    assert list(tmp_path.iterdir()) == []


def write_tiny_cifar10(root: Path, per_batch: int = 40) -> Path:
    """Six binary batches in the real record layout (label byte + R, G, B planes); the class lights a plane."""
    import numpy as np

    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, size=per_batch)
        images = rng.integers(0, 100, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, label % 3, : 3 * (label + 1)] += 150
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(per_batch, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return folder


@pytest.mark.torch
def test_cifar10_lab_records_a_fedavg_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fedloom.store import SqlStore

    write_tiny_cifar10(tmp_path / "data")
    home = tmp_path / "home"
    args = ["--data-dir", str(tmp_path / "data"), "--rounds", "2", "--clients", "4", "--home", str(home)]
    stdout = run_example("cifar10_lab.py", *args, "--batch-size", "10", cwd=tmp_path)
    accuracy = final_accuracy(stdout)
    run_id = re.findall(r"^run id: ([0-9a-f]{32})$", stdout, re.MULTILINE)[0]
    assert f"fedloom ui --home {home}" in stdout and f"fedloom runs show {run_id[:8]}" in stdout
    with SqlStore.open_default(home) as store:
        run = store.get_run(run_id)
        assert (run.name, run.status) == ("cifar10-lab", "finished")
        assert (run.config["dataset"], run.config["model"], run.config["partition"]) == ("cifar10", "cifar_cnn", "iid")
        assert store.metric_series(run_id, "accuracy")[-1] == (2, pytest.approx(accuracy, abs=5e-5))
        assert [r.num_updates for r in store.list_rounds(run_id)] == [4, 4]
    # watched in W&B offline, as the lab does (tests/tracking checks the file's values against the store)
    wandb_files = list((home / "wandb").rglob("*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0, wandb_files
