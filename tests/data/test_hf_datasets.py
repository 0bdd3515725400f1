"""Hugging Face datasets built here in memory and saved to disk: images and tables, no hub."""

import io
import os

import numpy as np
import pytest

from fedloom.core.errors import ConfigError, DataError
from fedloom.data import from_hf_dataset, load_data, parse_data_spec

datasets = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _quiet_progress_bars():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def image_dataset(n=8):
    images = [Image.fromarray(np.full((4, 5, 3), 30 * i, dtype=np.uint8)) for i in range(n)]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "label": datasets.ClassLabel(names=["zebra", "ant"]),  # not sorted: the dataset's order is kept
            "site": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {"img": images, "label": [i % 2 for i in range(n)], "site": [f"s{i % 3}" for i in range(n)]},
        features=features,
    )


def test_saved_image_dataset_dict_goes_through_the_image_path(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ds = image_dataset()
    datasets.DatasetDict({"train": ds, "test": ds.select([1, 2])}).save_to_disk(str(tmp_path / "saved"))
    data = load_data(parse_data_spec(f"hf:{tmp_path / 'saved'}", by="site"))
    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    assert data.class_names == ("zebra", "ant")
    train = data.splits.train
    assert train.x.dtype == np.uint8 and train.x.shape == (8, 3, 4, 5)
    np.testing.assert_array_equal(train.y, [0, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(train.x[:, 0, 0, 0], 30 * np.arange(8))
    np.testing.assert_array_equal(data.splits.test.y, [1, 0])
    np.testing.assert_array_equal(data.groups, [f"s{i % 3}" for i in range(8)])
    mean = (30 * np.arange(8)).mean() / 255
    np.testing.assert_allclose(data.preprocessing["mean"], [mean] * 3)
    assert data.preprocessing["image_column"] == "img"


def test_in_memory_image_dataset_resized_grayscale_and_held_out(tmp_path):
    spec = parse_data_spec("hf:memory", image_size=[2, 2], grayscale=True, test_fraction=0.25, by="site")
    data = from_hf_dataset(image_dataset(), spec)
    assert data.splits.train.x.shape == (6, 1, 2, 2) and len(data.splits.test) == 2
    assert data.groups is not None and len(data.groups) == 6


def tabular_dataset():
    return datasets.Dataset.from_dict(
        {
            "age": [30.0, 50.0, None, 70.0, 20.0],
            "smoker": ["yes", "no", "no", "yes", "no"],
            "outcome": ["dead", "alive", "alive", "dead", "alive"],
        }
    )


def test_tabular_dataset_goes_through_the_table_path(tmp_path):
    ds = tabular_dataset()
    ds.save_to_disk(str(tmp_path / "tab"))
    spec = parse_data_spec(
        f"hf:{tmp_path / 'tab'}", target="outcome", categorical=["smoker"], missing="median", test_fraction=0
    )
    data = load_data(spec)
    assert data.feature_names == ("age", "smoker=no", "smoker=yes")
    assert data.class_names == ("alive", "dead")
    np.testing.assert_array_equal(data.splits.train.y, [1, 0, 0, 1, 0])
    ages = np.array([30.0, 50.0, 40.0, 70.0, 20.0])  # the median 40 fills the gap, then standardised
    np.testing.assert_allclose(data.splits.train.x[:, 0], (ages - ages.mean()) / ages.std(), rtol=1e-6)
    with pytest.raises(DataError, match=r"\[train\]: row 3, column 'age': missing value"):
        load_data(parse_data_spec(f"hf:{tmp_path / 'tab'}", target="outcome", categorical=["smoker"]))
    with pytest.raises(DataError, match=r"row 1, column 'smoker': 'yes' is not a finite number"):
        from_hf_dataset(ds, parse_data_spec("hf:memory", target="outcome", missing="zero"))


def test_shuffled_selection_respects_the_indices_mapping():
    ds = tabular_dataset().select([4, 0])  # an indices mapping over the same arrow table
    data = from_hf_dataset(ds, parse_data_spec("hf:m", target="outcome", categorical=["smoker"], test_fraction=0))
    np.testing.assert_array_equal(data.splits.train.y, [0, 1])
    assert data.preprocessing["numeric"]["age"]["shift"] == 25.0


def test_bad_image_in_a_row_is_named():
    ds = image_dataset(3).cast_column("img", datasets.Image(decode=False))
    rows = ds.to_dict()
    rows["img"][1] = {"bytes": b"not an image at all", "path": None}
    broken = datasets.Dataset.from_dict(rows, features=ds.features).cast_column("img", datasets.Image())
    with pytest.raises(DataError, match=r"\[train\]: row 2, column 'img': not a readable image"):
        from_hf_dataset(broken)


def test_missing_target_and_splits_and_folders(tmp_path):
    with pytest.raises(DataError, match=r"no column 'y' \(the target\); the columns present are \['age'"):
        from_hf_dataset(tabular_dataset(), parse_data_spec("hf:m", target="y"))
    with pytest.raises(DataError, match=r"the DatasetDict has no 'train' split, only \['validation'\]"):
        from_hf_dataset(datasets.DatasetDict({"validation": tabular_dataset()}))
    with pytest.raises(DataError, match=r"no such folder; save the dataset with dataset\.save_to_disk"):
        load_data(parse_data_spec(f"hf:{tmp_path / 'absent'}"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        load_data(parse_data_spec(f"hf:{tmp_path / 'junk'}"))
    with pytest.raises(DataError, match="never downloads"):
        load_data(parse_data_spec("hf:hf://datasets/mnist"))
    with pytest.raises(DataError, match=r"expected a datasets\.Dataset or DatasetDict, got dict"):
        from_hf_dataset({"train": []})
    with pytest.raises(ConfigError, match="needs a DataSpec of kind 'hf', got 'table'"):
        from_hf_dataset(tabular_dataset(), parse_data_spec("table:x.csv", target="outcome"))


def test_missing_datasets_package_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install 'fedloom\[hf\]'"):
        load_data(parse_data_spec(f"hf:{tmp_path}"))


def test_png_bytes_round_trip_is_lossless():
    buffer = io.BytesIO()
    Image.fromarray(np.arange(60, dtype=np.uint8).reshape(4, 5, 3)).save(buffer, "PNG")
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": buffer.getvalue(), "path": None}], "label": [0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    data = from_hf_dataset(ds, parse_data_spec("hf:m", test_fraction=0))
    np.testing.assert_array_equal(data.splits.train.x[0], np.arange(60).reshape(4, 5, 3).transpose(2, 0, 1))
    assert data.class_names == ("0",)
