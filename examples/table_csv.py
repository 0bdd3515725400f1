"""Bring a table: a hospital-style CSV -> features, labels and one site id per training row.

What it shows:

* describe the data once with :func:`fedloom.data.parse_data_spec` (the same description
  that ``fedloom sim --data table:hospital.csv --target outcome --by site`` and a deployed
  ``fedloom agent --data table:/secure/local.csv --target outcome`` read);
* one-hot encode the text columns (``categorical``), with the ward levels fixed
  (``categories``) so every site builds the same feature width;
* fill missing ages with the median of the TRAINING rows (``missing = "median"``) and
  standardise with the training rows' mean and std: the test rows never leak in;
* ``by = "site"`` gives one site id per training row for a natural partition.

Run it (writes its CSV into a temporary folder unless you pass ``--dir DIR``)::

    python examples/table_csv.py
    python examples/table_csv.py --csv my_export.csv --target outcome   # your own file
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.data import DataSpec, LoadedData, load_data, parse_data_spec
from fedloom.sim import SimConfig, simulate_config

WARDS = ["cardio", "icu", "onco", "ortho"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="write the demo CSV here (default: a temporary folder)")
    parser.add_argument("--csv", help="load this CSV instead of the demo one (with --target)")
    parser.add_argument("--target", default="outcome", help="the label column (default: outcome)")
    parser.add_argument("--rows", type=int, default=300, help="rows of the demo CSV (default: 300)")
    return parser.parse_args()


def write_hospital_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """Three sites, an age with gaps, sex and ward as text, and an outcome that depends on them."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site", "age", "sex", "ward", "lactate", "outcome"])
        for _ in range(rows):
            site = f"hospital-{rng.integers(1, 4)}"
            age = rng.normal(60, 15)
            ward = WARDS[rng.integers(len(WARDS))]
            lactate = rng.gamma(2.0, 1.0) + (1.5 if ward == "icu" else 0.0)
            risk = 0.04 * (age - 60) + 0.8 * (lactate - 2.5) + rng.normal(0, 0.5)
            shown_age = "" if rng.random() < 0.05 else f"{age:.0f}"  # some ages were never recorded
            writer.writerow(
                [site, shown_age, rng.choice(["F", "M"]), ward, f"{lactate:.2f}", "dead" if risk > 0.5 else "alive"]
            )
    return path


def describe(data: LoadedData) -> None:
    splits = data.splits
    print(f"classes: {', '.join(data.class_names)}")
    print(f"features ({len(data.feature_names)}): {', '.join(data.feature_names)}")
    print(f"train: x {splits.train.x.shape} {splits.train.x.dtype}, y {splits.train.y.shape} {splits.train.y.dtype}")
    print(f"test: x {splits.test.x.shape}, class counts {splits.test.class_counts().tolist()}")
    if data.groups is not None:
        print(f"training rows per site: {dict(sorted(Counter(data.groups.tolist()).items()))}")
    print("scaler and imputation, fitted on the training rows only:")
    for name, fitted in data.preprocessing["numeric"].items():
        fill = "" if fitted["fill"] is None else f", missing filled with {fitted['fill']:.1f}"
        print(f"  {name}: train mean {fitted['shift']:.2f}, std {fitted['divisor']:.2f}{fill}")


def simulate(spec: DataSpec, **settings: Any) -> None:
    """A short simulation of this very description: what ``fedloom sim --data KIND:PATH`` runs.

    In a simulation config the natural-partition column is ``partition_by``, not the spec's ``by``.
    """
    data = {key: value for key, value in spec.to_mapping().items() if key != "by"}
    result = simulate_config(SimConfig(data=data, **settings))
    last = result.history[-1]
    print(
        f"simulated {len(result.history)} rounds with {last.num_selected} clients per round:"
        f" accuracy {last.metrics['accuracy']:.3f}, balanced accuracy {last.metrics['balanced_accuracy']:.3f}"
    )


def main() -> None:
    args = parse_args()
    if args.csv:
        describe(load_data(parse_data_spec(f"table:{args.csv}", target=args.target)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.dir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = write_hospital_csv(folder / "hospital.csv", args.rows)
        spec = parse_data_spec(
            f"table:{path}",
            target="outcome",
            categorical=["sex", "ward"],
            categories={"ward": WARDS},
            missing="median",
            by="site",
            test_fraction=0.2,
        )
        print(f"data description (a TOML [data] table or sim config): {spec.to_mapping()}")
        describe(load_data(spec))
        simulate(spec, partition="natural", partition_by="site", model="logreg", rounds=3)


if __name__ == "__main__":
    main()
