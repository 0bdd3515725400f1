"""``fedloom sim`` with the newer partition schemes: flags and TOML keys reach the run's config."""

import pytest

from fedloom.cli.main import main
from fedloom.store import SqlStore


def test_inner_dirichlet_sizes_from_flags_are_recorded(tmp_path, capsys):
    home = tmp_path / "home"
    argv = ["sim", "--clients", "2", "--rounds", "1", "--partition", "inner_dirichlet", "--client-sizes", "1000,347"]
    assert main([*argv, "--alpha", "0.2", "--home", str(home)]) == 0
    assert "2 clients (inner_dirichlet)" in capsys.readouterr().out
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
    assert (run.config["partition"], run.config["client_sizes"]) == ("inner_dirichlet", [1000, 347])


def test_size_skew_and_feature_skew_from_a_config_file(tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text(
        'clients = 4\nrounds = 1\npartition = "size_skew"\nsize_skew = "exponential"\nsize_skew_rate = 0.5\n'
    )
    assert main(["sim", "--config", str(config), "--no-store"]) == 0
    assert main(["sim", "--clients", "3", "--rounds", "1", "--partition", "feature_skew", "--feature-clusters", "4",
                 "--no-store"]) == 0  # fmt: skip


def test_a_flag_of_another_scheme_is_an_error(capsys):
    assert main(["sim", "--partition", "iid", "--size-skew", "square", "--no-store"]) != 0
    assert "size_skew (--size-skew) only applies to partition size_skew" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sim", "--partition", "inner_dirichlet", "--client-sizes", "5,x", "--no-store"])
    assert "--client-sizes '5,x': write whole numbers separated by commas" in capsys.readouterr().err
    assert main(["sim", "--partition", "inner_dirichlet", "--clients", "2", "--client-sizes", "5,5", "--no-store"]) != 0
    assert "client_sizes add up to 10 but there are 1347 samples" in capsys.readouterr().err
