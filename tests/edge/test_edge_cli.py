"""``fedloom edge`` refuses, before anything starts, a downstream strategy that is not a sample-weighted
mean, naming the field and the way out; and it needs an upstream URL."""

from __future__ import annotations

import pytest

from fedloom.cli.main import main


def test_a_median_edge_is_refused_naming_the_flag(tmp_path, capsys):
    code = main(["edge", "--upstream", "http://127.0.0.1:9", "--home", str(tmp_path / "edge"), "--strategy", "median"])
    err = capsys.readouterr().err
    assert code == 1
    assert "strategy 'median' (aggregator 'median') is refused" in err and "--allow-non-mean" in err


def test_a_server_optimiser_at_the_edge_is_refused(tmp_path, capsys):
    argv = ["edge", "--upstream", "http://127.0.0.1:9", "--home", str(tmp_path / "e"), "--server-opt", "fedadam"]
    assert main(argv) == 1
    assert "server_opt = 'fedadam' (server optimiser 'fedadam') is refused" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # refused before anything was created


def test_the_upstream_url_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["edge", "--home", "x"])
    assert "--upstream" in capsys.readouterr().err
