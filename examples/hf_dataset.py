"""Bring a Hugging Face dataset: a ``datasets.Dataset`` in Python, or one saved with ``save_to_disk``.

What it shows:

* ``hf:PATH`` reads a dataset saved with ``dataset.save_to_disk(PATH)``; the hub is never
  contacted (the loader sets ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1``);
* a ``DatasetDict``'s ``train`` and ``test`` splits are used as they are;
* an ``Image`` column goes through the image path (resize, per-channel standardisation on
  the training images), a ``ClassLabel`` keeps the dataset's own class names and order;
* a dataset without images is a table, read exactly as a CSV would be, with
  :func:`fedloom.data.from_hf_dataset` for one held in Python.

Needs ``pip install 'fedloom[hf]'``. Run it (writes into a temporary folder unless you
pass ``--dir DIR``)::

    python examples/hf_dataset.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.data import DataSpec, LoadedData, from_hf_dataset, load_data, parse_data_spec
from fedloom.sim import SimConfig, simulate_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="save the demo dataset here (default: a temporary folder)")
    parser.add_argument("--path", help="load this dataset saved with save_to_disk instead of the demo one")
    return parser.parse_args()


def save_demo_images(path: Path, seed: int = 0) -> Path:
    """Bright or dark 12x12 squares with a ClassLabel, saved as train and test splits."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    images = [Image.fromarray(np.full((12, 12, 3), 60 + 120 * int(k), dtype=np.uint8)) for k in labels]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["night", "day"])})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)
    datasets.DatasetDict({"train": ds.select(range(48)), "test": ds.select(range(48, 60))}).save_to_disk(str(path))
    return path


def describe(title: str, data: LoadedData) -> None:
    train, test = data.splits.train, data.splits.test
    print(f"{title}: classes {', '.join(data.class_names)}")
    print(f"  train: x {train.x.shape} {train.x.dtype}, y {train.y.shape} {train.y.dtype}; test: x {test.x.shape}")
    if data.feature_names:
        print(f"  features: {', '.join(data.feature_names)}")


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
    import datasets

    datasets.disable_progress_bars()
    if args.path:
        describe(args.path, load_data(parse_data_spec(f"hf:{args.path}")))
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = save_demo_images(Path(args.dir or scratch) / "squares", 0)
        describe("hf:squares (saved to disk)", load_data(parse_data_spec(f"hf:{path}", image_size=[8, 8])))
        simulate(parse_data_spec(f"hf:{path}", image_size=[8, 8]), model="logreg", clients=2, rounds=2)
    table = datasets.Dataset.from_dict(
        {
            "income": [31.0, 58.0, None, 44.0, 90.0, 23.0, 67.0, 39.0],
            "region": ["north", "south", "south", "east", "north", "east", "south", "north"],
            "default": ["no", "no", "yes", "no", "no", "yes", "no", "yes"],
        }
    )
    spec = parse_data_spec("hf:in-memory", target="default", categorical=["region"], missing="mean", test_fraction=0.25)
    describe("an in-memory table", from_hf_dataset(table, spec))


if __name__ == "__main__":
    main()
