from fedloom.cli.main import main
from fedloom.store import SqlStore


def test_sim_with_a_named_strategy_and_its_parameters(tmp_path, capsys):
    home = tmp_path / "home"
    code = main(
        ["sim", "--clients", "4", "--rounds", "3", "--lr", "0.5", "--strategy", "fedadam", "--server-lr", "0.1",
         "--beta2", "0.999", "--home", str(home)]
    )  # fmt: skip
    assert code == 0
    assert "strategy fedadam" in capsys.readouterr().out
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        opt = run.config["strategy"]["server_opt"]
    assert opt == {"name": "fedadam", "server_lr": 0.1, "beta1": 0.9, "tau": 0.001, "beta2": 0.999}


def test_sim_config_file_strategy_table(tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text('clients = 4\nrounds = 2\nstrategy = "trimmed_mean"\n[strategy_params]\ntrim_beta = 0.25\n')
    assert main(["sim", "--config", str(config), "--no-store", "--trim-beta", "0.2"]) == 0


def test_a_parameter_the_strategy_does_not_use_is_an_error(capsys):
    assert main(["sim", "--strategy", "krum", "--server-lr", "0.1", "--no-store"]) != 0
    err = capsys.readouterr().err
    assert "'server_lr' is not used by strategy 'krum'; it belongs to server_opt fedavgm" in err
