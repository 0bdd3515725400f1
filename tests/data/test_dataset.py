import numpy as np
import pytest

from fedloom.core.errors import DataError
from fedloom.data import ArrayDataset, DatasetSplits


def make(n=6, num_classes=3):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2)
    y = (np.arange(n) % num_classes).astype(np.int64)
    return ArrayDataset(x, y, num_classes)


def test_len_subset_and_class_counts():
    ds = make()
    assert len(ds) == 6
    sub = ds.subset(np.array([4, 1]))
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.y, [1, 1])
    np.testing.assert_array_equal(sub.x[0], ds.x[4])
    assert sub.num_classes == 3
    np.testing.assert_array_equal(ds.class_counts(), [2, 2, 2])


def test_subset_copies():
    ds = make()
    sub = ds.subset(np.array([0]))
    sub.x[0] = -1
    assert ds.x[0, 0, 0, 0] == 0


@pytest.mark.parametrize(
    ("x", "y", "k", "match"),
    [
        (np.zeros((3, 2), np.float32), np.zeros(4, np.int64), 2, "same length"),
        (np.zeros((3, 2), np.float32), np.zeros(3, np.int32), 2, "int64"),
        (np.zeros((3, 2), np.float32), np.array([0, 1, 2], np.int64), 2, r"\[0, 2\)"),
        (np.zeros((3, 2), np.float32), np.array([0, -1, 1], np.int64), 2, r"\[0, 2\)"),
        (np.zeros((3, 2), np.float32), np.zeros((3, 1), np.int64), 2, "1-D"),
        (np.zeros((3, 2), np.float32), np.zeros(3, np.int64), 0, "num_classes"),
    ],
)
def test_validation(x, y, k, match):
    with pytest.raises(DataError, match=match):
        ArrayDataset(x, y, k)


def test_splits_properties():
    splits = DatasetSplits("toy", make(), make(3))
    assert splits.num_classes == 3
    assert splits.input_shape == (1, 2, 2)
