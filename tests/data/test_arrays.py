"""NumPy arrays as data: ``arrays:data.npz`` (never unpickled) and ``from_arrays`` in Python."""

import numpy as np
import pytest

from fedloom.core.errors import DataError
from fedloom.data import from_arrays, load_data, parse_data_spec


def load(path, **options):
    return load_data(parse_data_spec(f"arrays:{path}", **options))


def test_npz_with_a_test_pair_and_groups(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], site=np.array(list("aabbcc")))
    data = load(tmp_path / "d.npz", by="site")
    assert data.splits.train.x.dtype == np.float32 and data.splits.train.y.dtype == np.int64
    np.testing.assert_array_equal(data.splits.train.x, x)
    np.testing.assert_array_equal(data.splits.test.y, [0, 1])
    assert data.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(data.groups, list("aabbcc"))


def test_npz_without_test_holds_out_a_seeded_stratified_fraction(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3, 2, 2))
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, g=np.arange(40))
    data = load(tmp_path / "d.npz", test_fraction=0.25, seed=2, by="g", scale="standard")
    assert data.splits.input_shape == (3, 2, 2)
    np.testing.assert_array_equal(data.splits.test.class_counts(), [2, 2, 2, 2])  # round(2.5) == 2 per class
    train_rows = data.groups.astype(int)
    assert len(train_rows) == len(data.splits.train) == 32
    expected = (x[train_rows] - x[train_rows].mean(axis=0)) / x[train_rows].std(axis=0)
    np.testing.assert_allclose(data.splits.train.x, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data.preprocessing["shift"]), x[train_rows].mean(axis=0).ravel())


def test_object_arrays_are_never_unpickled(tmp_path):
    np.savez(tmp_path / "evil.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="holds an object array, which fedloom will not unpickle"):
        load(tmp_path / "evil.npz")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x_train": np.zeros((2, 1))}, r"no array 'y_train'; the file holds \['x_train'\]"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(2, int), "x_test": np.zeros((1, 1))}, "come together"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(3, int)}, r"one label per sample \(2\)"),
        ({"x_train": np.array([[1.0], [np.nan]]), "y_train": np.zeros(2, int)}, r"x\[1, 0\] is nan"),
        ({"x_train": np.array(["a", "b"]).reshape(2, 1), "y_train": np.zeros(2, int)}, "must hold numbers"),
    ],
)
def test_malformed_npz_is_refused_by_name(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load(tmp_path / "d.npz")


def test_not_an_npz_and_missing_file(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        load(tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"no such \.npz file"):
        load(tmp_path / "absent.npz")


def test_from_arrays_string_labels_fixed_classes_and_huge_values():
    x = np.array([[1e300], [3e300], [-2e300], [5e300]])
    data = from_arrays(x, np.array(["b", "a", "b", "c"]), test_fraction=0, scale="standard")
    assert data.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(data.splits.train.y, [1, 0, 1, 2])
    unit = x[:, 0] / 5e300
    np.testing.assert_allclose(data.splits.train.x[:, 0], (unit - unit.mean()) / unit.std(), rtol=1e-6)
    with pytest.raises(DataError, match=r"x\[0, 0\] = 1e\+300 does not fit in float32; pass scale='standard'"):
        from_arrays(x, np.zeros(4, np.int64), test_fraction=0)
    named = from_arrays(np.zeros((2, 1)), np.array([0, 2]), classes=("no", "maybe", "yes"), test_fraction=0)
    assert named.splits.num_classes == 3 and named.class_names == ("no", "maybe", "yes")
    with pytest.raises(DataError, match="labels go up to 2 but classes names only 2"):
        from_arrays(np.zeros((2, 1)), np.array([0, 2]), classes=("no", "yes"), test_fraction=0)
    with pytest.raises(DataError, match=r"y\[1\], column 'label': label 'z' is not one of the classes"):
        from_arrays(np.zeros((2, 1)), np.array(["a", "z"]), classes=("a", "b"), test_fraction=0)
