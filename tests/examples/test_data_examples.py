"""The bring-your-own-data examples: each writes its own small data, loads it, prints what it
got, and simulates a short federation of the same description with the public API.

Each runs in a subprocess from an empty temporary folder, which must still be empty after
(the examples write their data into a temporary folder of their own).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_examples import run_example


def run(name: str, cwd: Path, *args: str) -> str:
    """Run the example from ``cwd`` (the other examples' runner) and check it wrote nothing there."""
    out = run_example(name, *args, cwd=cwd)
    assert list(cwd.iterdir()) == [], f"{name} wrote into its working folder"
    return out


def assert_simulated(out: str) -> float:
    """The example simulated its description; the final accuracy it printed."""
    found = re.search(r"simulated \d+ rounds with \d+ clients per round: accuracy ([0-9.]+), balanced accuracy", out)
    assert found, out
    return float(found.group(1))


def test_table_csv(tmp_path):
    out = run("table_csv.py", tmp_path)
    assert assert_simulated(out) >= 0.75  # the majority class is 0.70
    assert "classes: alive, dead" in out
    assert "features (8): age, sex=F, sex=M, ward=cardio, ward=icu, ward=onco, ward=ortho, lactate" in out
    assert "train: x (240, 8) float32, y (240,) int64" in out
    assert "training rows per site: {'hospital-1': " in out
    assert "missing filled with" in out


def test_table_csv_on_a_users_own_file(tmp_path):
    data = tmp_path.parent / f"{tmp_path.name}-own.csv"
    data.write_text("a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,z\n9,10,x\n")
    out = run("table_csv.py", tmp_path, "--csv", str(data), "--target", "y")
    assert "classes: x, z" in out and "features (2): a, b" in out


def test_images_folder(tmp_path):
    pytest.importorskip("PIL")
    out = run("images_folder.py", tmp_path)
    assert assert_simulated(out) >= 0.5  # three classes: chance is 0.33
    assert "classes: diagonal, horizontal, vertical" in out
    assert "train: x (27, 3, 16, 16) uint8" in out and "test: x (9, 3, 16, 16), class counts [3, 3, 3]" in out
    assert "a client's subset is standardised: x (4, 3, 16, 16) float32" in out
    assert "skipped files: 1" in out


def test_numpy_arrays(tmp_path):
    out = run("numpy_arrays.py", tmp_path)
    assert assert_simulated(out) >= 0.8  # three classes: chance is 0.33
    assert "arrays:blobs.npz: classes 0, 1, 2" in out
    assert "train: x (160, 5) float32, y (160,) int64; test: x (40, 5)" in out
    assert "groups: 4 distinct ids, one per training row" in out
    assert "from_arrays: classes high, low, mid" in out
    assert "standardised on the training rows: mean 0.000, std 1.000" in out


def test_hf_dataset(tmp_path):
    pytest.importorskip("datasets")
    out = run("hf_dataset.py", tmp_path)
    assert assert_simulated(out) >= 0.9  # two well-separated classes
    assert "hf:squares (saved to disk): classes night, day" in out
    assert "train: x (48, 3, 8, 8) uint8, y (48,) int64; test: x (12, 3, 8, 8)" in out
    assert "features: income, region=east, region=north, region=south" in out
