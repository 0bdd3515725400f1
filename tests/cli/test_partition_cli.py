import argparse
import json

import pytest

from fedloom.cli import partition as partition_cli
from fedloom.core.errors import ConfigError


def parse(*argv):
    parser = argparse.ArgumentParser(prog="fedloom")
    partition_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["partition", *argv])


def run(capsys, *argv):
    args = parse(*argv)
    assert args.func is partition_cli.run
    assert args.func(args) == 0
    return capsys.readouterr().out


def client_rows(out):
    rows = []
    for line in out.splitlines():
        head, sep, cells = line.partition("|")
        parts = head.split()
        if sep and len(parts) == 2 and parts[0].isdigit():
            rows.append((int(parts[0]), int(parts[1]), [int(c) for c in cells.split()]))
    return rows


def test_defaults():
    args = parse()
    assert (args.dataset, args.clients, args.partition, args.alpha) == ("digits", None, "dirichlet", 0.5)
    assert (args.classes_per_client, args.seed, args.json, args.data_dir) == (2, 0, False, None)


def test_digits_table_shows_sizes_and_histogram(capsys):
    out = run(capsys, "--clients", "10", "--partition", "dirichlet", "--alpha", "0.5")
    assert out.splitlines()[0].startswith(
        "digits train: 1347 samples, 10 classes; dirichlet(alpha=0.5) over 10 clients"
    )
    assert "c0" in out and "c9" in out
    rows = client_rows(out)
    assert [r[0] for r in rows] == list(range(10))
    for _, size, counts in rows:
        assert len(counts) == 10
        assert sum(counts) == size
    assert sum(r[1] for r in rows) == 1347
    assert "sizes: min" in out and "median" in out and "classes per client" in out


def test_shards_summary(capsys):
    out = run(capsys, "--partition", "shards", "--classes-per-client", "2")
    rows = client_rows(out)
    assert all(sum(c > 0 for c in counts) <= 2 for _, _, counts in rows)
    assert "classes_per_client=2" in out


def test_many_clients_elided(capsys):
    out = run(capsys, "--clients", "60", "--partition", "iid")
    ids = [r[0] for r in client_rows(out)]
    assert ids == [*range(20), *range(55, 60)]
    assert "(35 clients not shown)" in out
    assert "sizes: min 22, median 22, max 23" in out


def test_json(capsys):
    out = run(capsys, "--clients", "4", "--partition", "quantity", "--alpha", "1.0", "--seed", "3", "--json")
    report = json.loads(out)
    assert report["clients"] == 4
    assert report["partition"] == "quantity"
    assert report["alpha"] == 1.0
    assert sum(report["sizes"]) == 1347 == report["num_samples"]
    assert [sum(row) for row in report["histogram"]] == report["sizes"]
    assert report["summary"]["min_size"] == min(report["sizes"])
    assert 9.0 <= report["summary"]["mean_classes"] <= 10.0


def test_same_seed_same_output(capsys):
    assert run(capsys, "--seed", "5") == run(capsys, "--seed", "5")
    assert run(capsys, "--seed", "5") != run(capsys, "--seed", "6")


def test_bad_values():
    args = parse("--clients", "0")
    with pytest.raises(ConfigError, match="num_clients"):
        partition_cli.run(args)
    with pytest.raises(SystemExit):
        parse("--partition", "zipf")
