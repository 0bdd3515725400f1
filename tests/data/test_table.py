"""The table loader on small CSV and Parquet files written here, well-formed and malformed."""

import csv
import importlib.util
import json

import numpy as np
import pytest

from fedloom.core.errors import DataError
from fedloom.data import load_data, parse_data_spec


def write_csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


HEADER = ["age", "sex", "ward", "site", "outcome"]
TRAIN = [
    [30, "F", "A", "s1", "alive"],
    [50, "M", "B", "s1", "dead"],
    [40, "F", "A", "s2", "alive"],
    [70, "M", "C", "s2", "dead"],
]
TEST = [[1000, "M", "Z", "s3", "alive"], [20, "F", "B", "s1", "dead"]]


@pytest.fixture
def files(tmp_path):
    return write_csv(tmp_path / "train.csv", HEADER, TRAIN), write_csv(tmp_path / "test.csv", HEADER, TEST)


def load(path, **options):
    return load_data(parse_data_spec(f"table:{path}", **options))


def test_scaler_and_one_hot_are_fitted_on_train_rows_only(files):
    train, test = files
    data = load(train, target="outcome", test_path=str(test), categorical=["sex", "ward"], by="site")
    assert data.feature_names == ("age", "sex=F", "sex=M", "ward=A", "ward=B", "ward=C")
    assert data.class_names == ("alive", "dead")
    ages = np.array([30, 50, 40, 70], dtype=np.float64)
    mean, std = ages.mean(), ages.std()
    fitted = data.preprocessing["numeric"]["age"]
    assert fitted == {"fill": None, "shift": mean, "divisor": std}  # numpy on the 4 training rows, exactly
    x, y = data.splits.train.x, data.splits.train.y
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (4, 6)
    np.testing.assert_allclose(x[:, 0], (ages - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1:], [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    np.testing.assert_array_equal(y, [0, 1, 0, 1])
    # the test-only 1000 is scaled with the train constants; its unseen ward 'Z' is all zeros
    test_x = data.splits.test.x
    np.testing.assert_allclose(test_x[:, 0], (np.array([1000.0, 20.0]) - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(test_x[:, 1:], [[0, 1, 0, 0, 0], [1, 0, 0, 1, 0]])
    assert data.preprocessing["unseen_levels"] == {"train": {}, "test": {"ward": 1}}
    np.testing.assert_array_equal(data.splits.test.y, [0, 1])
    # the natural-partition column is one id per training row and never a feature
    np.testing.assert_array_equal(data.groups, ["s1", "s1", "s2", "s2"])
    assert "site" not in data.preprocessing["features"]
    json.dumps(data.preprocessing)


def test_fixed_categories_give_every_site_the_same_width(tmp_path):
    site = write_csv(tmp_path / "site.csv", ["ward", "y"], [["A", 0], ["A", 1], ["A", 0]])
    data = load(site, target="y", categorical=["ward"], categories={"ward": ["A", "B", "C", "D"]}, test_fraction=0)
    assert data.feature_names == ("ward=A", "ward=B", "ward=C", "ward=D")
    np.testing.assert_array_equal(data.splits.train.x, [[1, 0, 0, 0]] * 3)
    other = write_csv(tmp_path / "other.csv", ["ward", "y"], [["A", 0], ["E", 1], ["A", 0]])
    fixed = load(other, target="y", categorical=["ward"], categories={"ward": ["A", "B", "C", "D"]}, test_fraction=0)
    np.testing.assert_array_equal(fixed.splits.train.x, [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    assert fixed.preprocessing["unseen_levels"]["train"] == {"ward": 1}
    assert len(data.splits.test) == 0 and data.splits.test.x.shape == (0, 4)
    learnt = load(site, target="y", categorical=["ward"], test_fraction=0)
    assert learnt.feature_names == ("ward=A",)


def test_scaler_is_unchanged_by_a_test_only_extreme(tmp_path):
    rows = [[float(v), v % 2] for v in range(20)]
    plain = write_csv(tmp_path / "plain.csv", ["v", "y"], rows)
    extreme = write_csv(tmp_path / "extreme.csv", ["v", "y"], rows)
    held = write_csv(tmp_path / "held.csv", ["v", "y"], [[1.0, 0], [3.0, 1]])
    wild = write_csv(tmp_path / "wild.csv", ["v", "y"], [[1e30, 0], [3.0, 1]])
    a = load(plain, target="y", test_path=str(held))
    b = load(extreme, target="y", test_path=str(wild))
    assert a.preprocessing["numeric"] == b.preprocessing["numeric"]
    np.testing.assert_array_equal(a.splits.train.x, b.splits.train.x)
    # with a held-out fraction, the scaler equals numpy on exactly the training rows
    values = np.arange(20, dtype=np.float64)
    c = load(plain, target="y", test_fraction=0.25, seed=1)
    train_values = c.splits.train.x[:, 0] * c.preprocessing["numeric"]["v"]["divisor"]
    train_values += c.preprocessing["numeric"]["v"]["shift"]
    assert len(train_values) == 16
    assert set(np.round(train_values).astype(int)) < set(values.astype(int))
    assert c.preprocessing["numeric"]["v"]["shift"] == pytest.approx(np.mean(train_values))
    assert c.preprocessing["numeric"]["v"]["divisor"] == pytest.approx(np.std(train_values))
    assert c.preprocessing["numeric"]["v"]["shift"] != pytest.approx(values.mean())


def test_missing_column_names_it_and_the_columns_present(files):
    train, _ = files
    with pytest.raises(DataError, match=r"train.csv: no column 'outcom'; the columns present are 'age', 'sex'"):
        load(train, target="outcom")
    with pytest.raises(DataError, match="no column 'height'"):
        load(train, target="outcome", features=["age", "height"])
    with pytest.raises(DataError, match="no column 'hospital'"):
        load(train, target="outcome", by="hospital", categorical=["sex", "ward"])


def test_non_numeric_feature_names_file_row_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("age,y\n30,0\n\n41,1\nforty,0\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3 \(line 5\), column 'age': 'forty' is not a finite number"):
        load(path, target="y")
    with pytest.raises(DataError, match="list it in categorical"):
        load(path, target="y")
    # a text column left to the default feature list is refused, not silently encoded
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column 'sex': 'F' is not a finite number"):
        load(write_csv(tmp_path / "t.csv", ["sex", "y"], [["F", 0], ["M", 1]]), target="y")
    with pytest.raises(DataError, match=r"row 2 \(line 3\), column 'v': 'inf' is not a finite number"):
        load(write_csv(tmp_path / "inf.csv", ["v", "y"], [[1, 0], ["inf", 1]]), target="y")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "the file is empty; a table needs a header row"),
        ("a,y\n", "has a header but no data rows"),
        ("a,y\n1,0\n2\n", "line 3 has 1 fields, the header has 2"),
        ("a,a\n1,0\n", "the header names column 'a' twice"),
        ("a,,y\n1,2,0\n", "column 2 of the header has no name"),
    ],
)
def test_malformed_csv_files(tmp_path, text, match):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load(path, target="y")


def test_missing_target_names_the_row_unless_dropped(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "y"], [[1, 0], [2, ""], [3, 1], [4, 0]])
    with pytest.raises(DataError, match=r"row 2 \(line 3\), column 'y': missing value; set missing = drop"):
        load(path, target="y")
    with pytest.raises(DataError, match="column 'y': missing value; set missing = drop,"):
        load(path, target="y", missing="mean")  # a label is never imputed
    dropped = load(path, target="y", missing="drop", test_fraction=0)
    assert dropped.preprocessing["dropped_rows"] == [1]
    np.testing.assert_array_equal(dropped.splits.train.y, [0, 1, 0])


def test_missing_feature_values_policies(tmp_path):
    train = write_csv(tmp_path / "tr.csv", ["a", "y"], [[1, 0], ["NA", 1], [2, 0], [6, 1]])
    test = write_csv(tmp_path / "te.csv", ["a", "y"], [["", 0], [100, 1]])
    opts = {"target": "y", "test_path": str(test), "scale": "none"}
    with pytest.raises(DataError, match=r"tr.csv: row 2 \(line 3\), column 'a': missing value; set missing = drop \|"):
        load(train, **opts)
    mean = load(train, missing="mean", **opts)
    np.testing.assert_array_equal(mean.splits.train.x[:, 0], [1, 3, 2, 6])  # mean of 1, 2, 6 (train only)
    np.testing.assert_array_equal(mean.splits.test.x[:, 0], [3, 100])
    median = load(train, missing="median", **opts)
    np.testing.assert_array_equal(median.splits.test.x[:, 0], [2, 100])
    zero = load(train, missing="zero", **opts)
    np.testing.assert_array_equal(zero.splits.train.x[:, 0], [1, 0, 2, 6])
    drop = load(train, missing="drop", **opts)
    assert drop.preprocessing["dropped_rows"] == [1, 1]
    np.testing.assert_array_equal(drop.splits.test.x[:, 0], [100])


def test_class_ids_sort_numbers_by_value_and_fixed_classes_refuse_others(tmp_path):
    path = write_csv(tmp_path / "c.csv", ["a", "y"], [[1, 10], [2, 2], [3, 1], [4, 2]])
    data = load(path, target="y", test_fraction=0)
    assert data.class_names == ("1", "2", "10")
    np.testing.assert_array_equal(data.splits.train.y, [2, 1, 0, 1])
    fixed = load(path, target="y", test_fraction=0, classes=["10", "2", "1", "7"])
    assert fixed.splits.num_classes == 4
    np.testing.assert_array_equal(fixed.splits.train.y, [0, 1, 2, 1])
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column 'y': label '10' is not one of the classes"):
        load(path, target="y", classes=["1", "2"])


def test_huge_and_tiny_values_are_standardised_exactly(tmp_path):
    huge = np.array([1e300, 3e300, -2e300, 5e300])
    tiny = np.array([1e-300, 3e-300, 2e-300, 5e-300])
    rows = [[repr(float(h)), repr(float(t)), i % 2] for i, (h, t) in enumerate(zip(huge, tiny, strict=True))]
    data = load(write_csv(tmp_path / "h.csv", ["huge", "tiny", "y"], rows), target="y", test_fraction=0)
    for column, values in (("huge", huge), ("tiny", tiny)):
        fitted = data.preprocessing["numeric"][column]
        scaled = values / np.abs(values).max()  # numpy's own std would overflow / underflow here
        assert fitted["shift"] == pytest.approx(scaled.mean() * np.abs(values).max(), rel=1e-12)
        assert fitted["divisor"] == pytest.approx(scaled.std() * np.abs(values).max(), rel=1e-12)
    unit = tiny / 5e-300  # np.std(tiny) itself underflows to 0 and would make the column look constant
    np.testing.assert_allclose(data.splits.train.x[:, 1], (unit - unit.mean()) / unit.std(), rtol=1e-6)
    assert np.isfinite(data.splits.train.x).all()
    with pytest.raises(DataError, match="column 'huge': '1e\\+300' does not fit in float32 once scaled"):
        load(tmp_path / "h.csv", target="y", test_fraction=0, scale="none")


def test_minmax_and_constant_columns(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a", "k", "y"], [[2, 5, 0], [4, 5, 1], [10, 5, 0]])
    data = load(path, target="y", test_fraction=0, scale="minmax")
    np.testing.assert_allclose(data.splits.train.x, [[0, 0], [0.25, 0], [1, 0]])
    assert data.preprocessing["numeric"]["k"] == {"fill": None, "shift": 5.0, "divisor": 1.0}


def test_parquet_with_int64_float64_bool_and_strings(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "count": pa.array([3, None, 2**40, 7], type=pa.int64()),
            "dose": pa.array([0.5, 1.5, float("nan"), 2.5], type=pa.float64()),
            "flag": [True, False, True, False],
            "colour": ["red", "blue", None, "red"],
            "site": [1, 1, 2, 2],
            "y": [0, 1, 1, 0],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    data = load(tmp_path / "t.parquet", target="y", categorical=["colour"], by="site", missing="zero", test_fraction=0)
    assert data.feature_names == ("count", "dose", "flag", "colour=blue", "colour=red")
    counts = np.array([3, 0, 2**40, 7], dtype=np.float64)
    assert data.preprocessing["numeric"]["count"]["shift"] == pytest.approx(counts.mean())
    np.testing.assert_array_equal(data.splits.train.x[:, 3:], [[0, 1], [1, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(data.groups, ["1", "1", "2", "2"])
    with pytest.raises(DataError, match=r"t.parquet: row 2, column 'count': missing value"):
        load(tmp_path / "t.parquet", target="y", categorical=["colour"])
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        load(tmp_path / "bad.parquet", target="y")


def test_missing_file_unknown_suffix_and_missing_extra(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such table file"):
        load(tmp_path / "absent.csv", target="y")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown table format '.xlsx'; name the file with one of .csv, .tsv"):
        load(tmp_path / "t.xlsx", target="y")
    (tmp_path / "t.parquet").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install 'fedloom\[tables\]'"):
        load(tmp_path / "t.parquet", target="y")


def test_tsv_utf8_bom_and_stratified_seeded_split(tmp_path):
    rows = "".join(f"{i}\t{i % 3}\n" for i in range(30))
    path = tmp_path / "t.tsv"
    path.write_text("\ufeffv\ty\n" + rows, encoding="utf-8")
    a = load(path, target="y", test_fraction=0.2, seed=5)
    b = load(path, target="y", test_fraction=0.2, seed=5)
    np.testing.assert_array_equal(a.splits.test.x, b.splits.test.x)
    np.testing.assert_array_equal(a.splits.test.class_counts(), [2, 2, 2])
    assert a.preprocessing["rows"] == {"train": 24, "test": 6}
