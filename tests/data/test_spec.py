"""DataSpec: the data description shared by sim and agent, parsed and refused by name."""

import json
import tomllib

import pytest

from fedloom.core.errors import ConfigError
from fedloom.data import DATA_KINDS, DataSpec, parse_data_spec


def test_parse_kind_path_and_options():
    spec = parse_data_spec("table:hospital.csv", target="outcome", by="site", categorical=["sex"])
    assert (spec.kind, spec.path, spec.target, spec.by) == ("table", "hospital.csv", "outcome", "site")
    assert spec.categorical == ("sex",)
    assert spec.scaling == "standard" and spec.missing == "error" and spec.test_fraction == 0.2
    # a path may itself hold colons: only the first one separates the kind
    assert parse_data_spec("arrays:/data/run:3.npz").path == "/data/run:3.npz"


@pytest.mark.parametrize("text", ["hospital.csv", "csv:hospital.csv", "table:", ":x.csv"])
def test_bad_kind_names_the_valid_kinds(text):
    with pytest.raises(ConfigError, match="images, table, hf, arrays"):
        parse_data_spec(text, target="y")


def test_unknown_option_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"unknown data option\(s\) scaling, traget; valid options: kind, path"):
        parse_data_spec("table:a.csv", target="y", traget="y", scaling="standard")


def test_table_needs_a_target():
    with pytest.raises(ConfigError, match="a table needs target"):
        parse_data_spec("table:a.csv")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"missing": "impute"}, "missing='impute'; valid: error, drop, mean, median, zero"),
        ({"scale": "zscore"}, "scale='zscore'; valid: standard, minmax, none"),
        ({"test_fraction": 1.0}, r"test_fraction must lie in \[0, 1\)"),
        ({"test_fraction": float("nan")}, "test_fraction must be a number"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"categorical": "sex"}, "categorical must be a list of names"),
        ({"features": ["a", "a"]}, "features lists a name twice"),
        ({"features": ["a", "y"]}, "features lists 'y', the target column"),
        ({"categorical": ["y"]}, "categorical lists 'y', the target column"),
        ({"by": "y"}, "target and by are the same column"),
        ({"features": ["a"], "categorical": ["b"]}, "categorical lists b, which features does not"),
        ({"categories": {"b": ["x"]}}, "categories given for b, which categorical does not list"),
        ({"image_size": [28]}, "image_size must be"),
        ({"grayscale": True}, "grayscale does not apply to kind 'table'"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options, match):
    with pytest.raises(ConfigError, match=match):
        parse_data_spec("table:a.csv", target="y", **options)


def test_options_of_another_kind_are_refused():
    with pytest.raises(ConfigError, match="target does not apply to kind 'images'"):
        parse_data_spec("images:photos", target="label")
    with pytest.raises(ConfigError, match="missing does not apply to kind 'arrays'"):
        parse_data_spec("arrays:d.npz", missing="drop")
    with pytest.raises(ConfigError, match="test_path does not apply to kind 'arrays'"):
        parse_data_spec("arrays:d.npz", test_path="t.npz")  # the .npz holds x_test / y_test itself
    assert parse_data_spec("images:photos", image_size=[32, 24], grayscale=True).image_size == (32, 24)


def test_mapping_round_trip_through_toml_and_json(tmp_path):
    spec = parse_data_spec(
        "table:hospital.csv",
        target="outcome",
        categorical=["sex", "ward"],
        categories={"ward": ["A", "B", "C"]},
        classes=["alive", "dead"],
        missing="median",
        by="site",
        seed=3,
    )
    mapping = spec.to_mapping()
    assert mapping == {
        "kind": "table",
        "path": "hospital.csv",
        "target": "outcome",
        "categorical": ["sex", "ward"],
        "categories": {"ward": ["A", "B", "C"]},
        "classes": ["alive", "dead"],
        "missing": "median",
        "by": "site",
        "seed": 3,
    }
    assert DataSpec.from_mapping(json.loads(json.dumps(mapping))) == spec
    toml_text = (
        '[data]\ndata = "table:hospital.csv"\ntarget = "outcome"\ncategorical = ["sex", "ward"]\n'
        'classes = ["alive", "dead"]\nmissing = "median"\nby = "site"\nseed = 3\n'
        '[data.categories]\nward = ["A", "B", "C"]\n'
    )
    assert DataSpec.from_mapping(tomllib.loads(toml_text)["data"]) == spec
    hash(spec)  # usable as a cache key despite the categories mapping


def test_data_string_and_kind_or_path_must_agree():
    assert DataSpec.from_mapping({"data": "arrays:d.npz", "kind": "arrays"}).path == "d.npz"
    with pytest.raises(ConfigError, match=r"data = 'arrays:d\.npz' and kind = 'table' disagree"):
        DataSpec.from_mapping({"data": "arrays:d.npz", "kind": "table"})


def test_test_path_and_test_fraction_are_exclusive():
    with pytest.raises(ConfigError, match="give test_path or test_fraction, not both"):
        parse_data_spec("table:a.csv", target="y", test_path="b.csv", test_fraction=0.3)


def test_from_mapping_needs_kind_and_path():
    with pytest.raises(ConfigError, match="needs 'path'"):
        DataSpec.from_mapping({"kind": "arrays"})


def test_spec_is_frozen_and_categories_read_only():
    spec = parse_data_spec("table:a.csv", target="y", categorical=["c"], categories={"c": ["x"]})
    with pytest.raises(AttributeError):
        spec.target = "z"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.categories["c"] = ("q",)  # type: ignore[index]
    assert DATA_KINDS == ("images", "table", "hf", "arrays")
