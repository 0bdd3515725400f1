"""``fedloom sim --dataset cifar10 --model cifar_cnn`` on tiny binary batches, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cifar10_files import write_fake_cifar10

from fedloom.cli.main import main
from fedloom.store import SqlStore

pytest.importorskip("torch")

pytestmark = pytest.mark.torch


def test_one_round_with_the_lab_cnn_is_recorded(tmp_path: Path) -> None:
    """Run as a user would, in its own process (training a CNN grows a process by ~70 MiB for good)."""
    write_fake_cifar10(tmp_path / "data", per_batch=20)
    home = tmp_path / "home"
    argv = ["sim", "--dataset", "cifar10", "--model", "cifar_cnn", "--data-dir", str(tmp_path / "data")]
    argv += ["--clients", "5", "--rounds", "1", "--batch-size", "10", "--home", str(home)]
    proc = subprocess.run(
        [sys.executable, "-m", "fedloom.cli.main", *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "cifar10 / cifar_cnn, 5 clients" in proc.stdout
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        assert run.status == "finished" and run.name == "cifar10-cifar_cnn-iid"
        (accuracy,) = store.metric_series(run.id, "accuracy")
        assert accuracy[0] == 1 and 0.0 <= accuracy[1] <= 1.0
        (model,) = [m for m in store.list_global_models(run.id) if m.round == 1]
        weights = store.load_global_model(run.id, 1)
    assert model.num_samples == 100  # 5 clients x 20 images (5 batches of 20 = 100 training images)
    assert weights["7.weight"].shape == (512, 1600)
    assert weights["0.weight"].shape == (32, 3, 5, 5)


def test_missing_data_fails_with_the_download_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--no-store", "--rounds", "1"])
    assert code == 1
    assert "cifar-10-binary.tar.gz" in capsys.readouterr().err
