"""``fedloom partition`` with the newer schemes: their flags, their statistics, their errors."""

import argparse
import json

import numpy as np
import pytest

from fedloom.cli import partition as partition_cli
from fedloom.core.errors import ConfigError

DIGITS_TRAIN = 1347


def parse(*argv):
    parser = argparse.ArgumentParser(prog="fedloom")
    partition_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["partition", *argv])


def run(capsys, *argv):
    args = parse(*argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def run_json(capsys, *argv):
    return json.loads(run(capsys, *argv, "--json"))


@pytest.fixture
def site_files(tmp_path):
    sites = np.array([f"site-{i % 3}" for i in range(DIGITS_TRAIN)])
    np.save(tmp_path / "sites.npy", sites)
    users = [str(i % 12) for i in range(DIGITS_TRAIN)]
    (tmp_path / "table.csv").write_text("row,user\n" + "".join(f"{i},{u}\n" for i, u in enumerate(users)))
    return tmp_path


def test_natural_from_npy_prints_the_group_of_every_client(capsys, site_files):
    out = run(capsys, "--partition", "natural", "--groups-file", str(site_files / "sites.npy"))
    assert "natural(by=" in out.splitlines()[0] and "over 3 clients" in out.splitlines()[0]
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [(r[0], r[1], int(r[2])) for r in rows] == [("0", "site-0", 449), ("1", "site-1", 449), ("2", "site-2", 449)]
    report = run_json(capsys, "--partition", "natural", "--groups-file", str(site_files / "sites.npy"))
    assert report["summary"]["names"] == ["site-0", "site-1", "site-2"]
    assert report["clients"] == 3 and report["sizes"] == [449, 449, 449]


def test_natural_from_a_csv_column_sorts_numeric_ids_as_numbers(capsys, site_files):
    report = run_json(capsys, "--partition", "natural", "--groups-file", str(site_files / "table.csv"), "--by", "user")
    assert report["summary"]["names"] == [str(u) for u in range(12)]
    assert report["sizes"] == [113] * 3 + [112] * 9
    assert report["by"] == "user"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--partition", "natural"], r"natural needs each sample's group: --groups-file F.npy, or F.csv --by"),
        (["--partition", "natural", "--groups-file", "table.csv"], r"has columns row, user; add --by COLUMN"),
        (["--partition", "natural", "--groups-file", "table.csv", "--by", "site"], r"'site' is not one of them"),
        (["--partition", "natural", "--groups-file", "sites.npy", "--by", "x"], r"single column already; drop --by"),
        (["--partition", "natural", "--groups-file", "nope.npy"], r"does not exist"),
        (["--partition", "natural", "--groups-file", "short.npy"], r"holds 5 groups but the digits training split"),
        (["--partition", "natural", "--groups-file", "sites.npy", "--clients", "4"], r"makes 3 clients, but num_c"),
        (["--partition", "iid", "--by", "user"], r"--by only applies to --partition natural"),
        (["--partition", "iid", "--client-sizes", "1,2"], r"--client-sizes only applies to --partition inner_dir"),
        (["--partition", "dirichlet", "--size-skew", "square"], r"--size-skew only applies to --partition size_skew"),
        (["--partition", "iid", "--feature-clusters", "3"], r"--feature-clusters only applies to --partition feat"),
        (["--partition", "inner_dirichlet", "--client-sizes", "1,x"], r"write whole numbers separated by commas"),
        (["--partition", "inner_dirichlet", "--clients", "2", "--client-sizes", "1,2"], r"add up to 3 but there"),
        (["--partition", "iid", "--local-test-fraction", "1.0"], r"test_fraction must be a number in \[0, 1\)"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(site_files, argv, match):
    np.save(site_files / "short.npy", np.arange(5))
    argv = [str(site_files / a) if a.endswith((".npy", ".csv")) else a for a in argv]
    with pytest.raises(ConfigError, match=match):
        partition_cli.run(parse(*argv))


def test_inner_dirichlet_sizes_and_entropy(capsys):
    sizes = "100,200,300,747"
    skewed = run_json(
        capsys, "--partition", "inner_dirichlet", "--clients", "4", "--client-sizes", sizes, "--alpha", "0.1"
    )
    flat = run_json(
        capsys, "--partition", "inner_dirichlet", "--clients", "4", "--client-sizes", sizes, "--alpha", "100"
    )
    assert skewed["sizes"] == flat["sizes"] == [100, 200, 300, 747]
    assert skewed["params"] == {"alpha": 0.1, "client_sizes": [100, 200, 300, 747]}
    assert skewed["summary"]["mean_label_entropy"] < flat["summary"]["mean_label_entropy"] - 0.5
    assert flat["summary"]["global_label_entropy"] == pytest.approx(np.log(10), abs=0.01)
    equal = run_json(capsys, "--partition", "inner_dirichlet", "--clients", "10")
    assert sorted(set(equal["sizes"])) == [134, 135]


def test_size_skew_prints_the_law(capsys):
    out = run(capsys, "--partition", "size_skew", "--size-skew", "square", "--clients", "4")
    assert "size_skew(size_skew=square) over 4 clients" in out
    report = run_json(capsys, "--partition", "size_skew", "--size-skew", "square", "--clients", "4")
    assert report["sizes"] == [45, 180, 404, 718]  # 1347 * k^2 / 30 by largest remainder


def test_feature_skew_spread_is_shown_and_grows_as_alpha_falls(capsys):
    spread = {
        alpha: run_json(capsys, "--partition", "feature_skew", "--alpha", alpha, "--clients", "5")["summary"][
            "feature_mean_spread"
        ]
        for alpha in ("0.05", "1000")
    }
    iid = run_json(capsys, "--partition", "iid", "--clients", "5")["summary"]["feature_mean_spread"]
    assert spread["0.05"] > 10 * spread["1000"] and spread["0.05"] > 10 * iid
    assert iid < 0.01
    assert "feature-mean spread:" in run(capsys, "--partition", "feature_skew", "--feature-clusters", "4")


def test_local_test_fraction_shows_the_held_out_sets(capsys):
    out = run(capsys, "--partition", "iid", "--clients", "4", "--local-test-fraction", "0.25")
    assert "client size test |" in out
    assert "local test sets (0.25 of each client): 336 samples held out, min 84, max 84 per client" in out
    report = run_json(capsys, "--partition", "iid", "--clients", "4", "--local-test-fraction", "0.25")
    assert report["sizes"] == [337, 337, 337, 336]
    assert report["summary"]["test_sizes"] == [84, 84, 84, 84]  # round(0.25 * size)
