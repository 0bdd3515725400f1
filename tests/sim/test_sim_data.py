"""``fedloom sim --data KIND:PATH``: a local dataset, its natural partition and what the run records."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fedloom.cli.main import main
from fedloom.core.errors import ConfigError
from fedloom.data import load_data
from fedloom.sim.config import SimConfig, config_from_mapping, load_config_file
from fedloom.sim.config_data import data_spec_for
from fedloom.sim.tasks import build_task, resume_config, simulate_config
from fedloom.store import SqlStore

#: rows per site: the natural partition must give client k exactly site k's training rows
SITES = {"clinic": 50, "general": 80, "north": 30}


def write_hospital(path: Path) -> Path:
    """Three sites' rows, interleaved; numeric age and dose, a categorical ward, a 3-level outcome."""
    rng = np.random.default_rng(0)
    order = [site for site, rows in SITES.items() for _ in range(rows)]
    rng.shuffle(order)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site", "age", "dose", "ward", "outcome"])
        for site in order:
            age, dose = rng.normal(size=2)
            ward = ["a", "b"][int(rng.integers(2))]
            outcome = ["low", "mid", "high"][int(age > 0) + int(dose > 0.5)]
            writer.writerow([site, f"{50 + 12 * age:.2f}", f"{dose:.3f}", ward, outcome])
    return path


def data_of(path: Path, **extra: object) -> dict[str, object]:
    return {"kind": "table", "path": str(path), "target": "outcome", "categorical": ["ward"], **extra}


def test_dataset_and_data_exclude_each_other_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset \('digits'\) and data \(table:.*h.csv\) exclude each other"):
        SimConfig(dataset="digits", data=data_of(tmp_path / "h.csv"))
    base = config_from_mapping({"dataset": "fmnist"})
    with pytest.raises(ConfigError, match=r"--dataset NAME .* or --data KIND:PATH .*, not both"):
        config_from_mapping({"data": "table:h.csv"}, base)
    with pytest.raises(ConfigError, match=r"unknown data option\(s\) colour"):
        SimConfig(data={"kind": "table", "path": "h.csv", "target": "y", "colour": "red"})
    with pytest.raises(ConfigError, match=r"data.by: the group column is partition_by \(--by COL\)"):
        SimConfig(data=data_of(tmp_path / "h.csv", by="site"))
    assert SimConfig().dataset_name() == "digits"
    assert SimConfig().to_dict()["dataset"] == "digits"  # a run records what it trained on
    assert SimConfig(data=data_of(tmp_path / "h.csv")).to_dict()["dataset"] is None


def test_natural_partition_gives_one_client_per_site(tmp_path: Path) -> None:
    hospital = write_hospital(tmp_path / "hospital.csv")
    config = SimConfig(data=data_of(hospital), partition="natural", partition_by="site", model="mlp-numpy", seed=4)
    task = build_task(config)
    assert task.config.clients == 3 and len(task.partitions) == 3
    assert task.description["clients"] == sorted(SITES)
    assert task.data.input_shape == (4,)  # age, dose, ward=a, ward=b: the model's input comes from the data
    assert task.data.num_classes == 3
    # client k holds exactly the training rows of the k-th site (the loader holds 20 % back as the test split)
    groups = load_data(data_spec_for(config.data, config.seed, config.partition_by)).groups
    assert groups is not None and len(task.data.train) == 128
    for part, site in zip(task.partitions, sorted(SITES), strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(groups == site))
    assert task.description["feature_names"] == ["age", "dose", "ward=a", "ward=b"]
    assert task.description["class_names"] == ["high", "low", "mid"]
    with pytest.raises(ConfigError, match=r"3 distinct values, so it makes 3 clients, but num_clients=5"):
        build_task(SimConfig(data=data_of(hospital), partition="natural", partition_by="site", clients=5))


def test_natural_partition_needs_a_group_column() -> None:
    with pytest.raises(ConfigError, match=r"partition natural needs a local dataset with a group column: --data"):
        build_task(SimConfig(partition="natural", partition_by="site"))


def test_the_command_records_the_description_and_the_fitted_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hospital = write_hospital(tmp_path / "hospital.csv")
    home = tmp_path / "home"
    argv = ["sim", "--data", f"table:{hospital}", "--target", "outcome", "--categorical", "ward"]
    argv += ["--partition", "natural", "--by", "site", "--rounds", "2", "--lr", "0.5", "--home", str(home)]
    assert main(argv) == 0
    assert f"fedloom sim: table:{hospital} / logreg, one client per site (natural)" in capsys.readouterr().out
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
    assert run.name == "hospital.csv-logreg-natural"
    assert run.config["data"] == data_of(hospital)
    assert run.config["clients"] == 3
    recorded = run.config["data_description"]
    assert recorded["spec"]["by"] == "site" and recorded["clients"] == sorted(SITES)
    numeric = recorded["preprocessing"]["numeric"]
    assert set(numeric) == {"age", "dose"} and numeric["age"]["divisor"] > 1  # ages spread by ~12 years
    assert recorded["preprocessing"]["categories"] == {"ward": ["a", "b"]}


def test_description_flags_need_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--target", "outcome", "--no-store"]) == 1
    assert "--target describe a local dataset: add --data KIND:PATH" in capsys.readouterr().err


def test_the_toml_file_takes_the_description_as_a_table_or_a_string(tmp_path: Path) -> None:
    hospital = write_hospital(tmp_path / "hospital.csv")
    table = tmp_path / "table.toml"
    table.write_text(
        f'[sim]\npartition = "natural"\npartition_by = "site"\n[sim.data]\nkind = "table"\npath = "{hospital}"\n'
        'target = "outcome"\ncategorical = ["ward"]\n'
    )
    assert load_config_file(table).data == data_of(hospital)
    short = tmp_path / "short.toml"  # the KIND:PATH shorthand, for a kind that needs no other option
    short.write_text('data = "arrays:site.npz"\n')
    assert load_config_file(short).data == {"kind": "arrays", "path": "site.npz"}
    short.write_text(f'data = "table:{hospital}"\n')
    with pytest.raises(ConfigError, match=r"a table needs target"):
        load_config_file(short)


def test_a_data_run_resumes_with_its_description(tmp_path: Path) -> None:
    hospital = write_hospital(tmp_path / "hospital.csv")
    config = SimConfig(data=data_of(hospital), partition="natural", partition_by="site", rounds=1, lr=0.5)
    with SqlStore.open_default(tmp_path / "home") as store:
        result = simulate_config(config, store=store)
        resumed = resume_config(store, result.run_id)
    assert resumed.data == data_of(hospital) and resumed.dataset is None
    assert (resumed.partition, resumed.partition_by, resumed.clients) == ("natural", "site", 3)
    assert len(build_task(resumed).partitions) == 3
