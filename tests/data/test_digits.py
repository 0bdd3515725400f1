import sys

import numpy as np
import pytest

from fedloom.core.errors import ConfigError, DataError
from fedloom.data import DATASETS, load_dataset, load_digits
from fedloom.data.digits import stratified_split


def test_shapes_and_ranges():
    splits = load_digits()
    assert splits.name == "digits"
    assert len(splits.train) + len(splits.test) == 1797
    assert splits.train.x.shape[1:] == (1, 8, 8)
    assert splits.train.x.dtype == np.float32
    assert splits.train.y.dtype == np.int64
    assert splits.train.x.min() == 0.0
    assert splits.train.x.max() == 1.0
    assert splits.num_classes == 10


def test_stratified():
    splits = load_digits(test_fraction=0.25)
    total = splits.train.class_counts() + splits.test.class_counts()
    np.testing.assert_array_equal(splits.test.class_counts(), np.round(0.25 * total))
    assert len(splits.test) == 450


def test_seeded():
    a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)


def test_split_covers_everything_once():
    labels = np.repeat(np.arange(3), [10, 7, 4])
    train, test = stratified_split(labels, 0.5, seed=0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(21))
    np.testing.assert_array_equal(np.bincount(labels[test]), [5, 4, 2])


def test_bad_fraction():
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_missing_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'fedloom\[datasets\]'"):
        load_digits()


def test_load_dataset_by_name():
    assert DATASETS == ("fmnist", "digits", "cifar10")
    assert len(load_dataset("digits").train) == 1347
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'.*fmnist, digits"):
        load_dataset("mnist")
