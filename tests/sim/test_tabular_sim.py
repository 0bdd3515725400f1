"""The tabular path in ``fedloom sim``: the NumPy MLP as ``--model mlp-numpy``, ``--class-weight``
reaching every client's trainer, and the imbalance-aware metrics in the central evaluation."""

import json

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from fedloom.cli.main import main
from fedloom.client import NumpyLogisticTrainer, NumpyMLPTrainer
from fedloom.core.errors import ConfigError
from fedloom.sim.config import SimConfig, config_from_mapping, load_config_file
from fedloom.sim.tasks import build_task, simulate_config
from fedloom.store import SqlStore

NEW_METRICS = {"auc", "f1_macro", "balanced_accuracy"}


def test_mlp_numpy_trains_a_federation_and_the_server_reports_the_new_metrics():
    config = SimConfig(model="mlp-numpy", clients=4, rounds=5, lr=0.2, class_weight="balanced")
    result = simulate_config(config)
    final = result.history[-1].metrics
    assert set(final) >= NEW_METRICS and final["accuracy"] > 0.9 and final["auc"] > 0.99
    assert all(np.isfinite(final[name]) for name in NEW_METRICS)
    assert result.series("balanced_accuracy")[0][1] < final["balanced_accuracy"]


def test_each_client_weights_its_loss_by_its_own_labels():
    config = SimConfig(model="logreg", clients=5, partition="dirichlet", alpha=0.3, class_weight="balanced")
    task = build_task(config)
    for index in range(5):
        trainer = task.client_fn(index)
        assert isinstance(trainer, NumpyLogisticTrainer)
        present = np.unique(trainer.y)
        expected = compute_class_weight("balanced", classes=present, y=trainer.y)
        np.testing.assert_allclose(trainer.class_weights[present], expected, rtol=1e-12)
    explicit = build_task(SimConfig(model="mlp-numpy", clients=2, class_weight=",".join(["1"] * 9 + ["5"])))
    trainer = explicit.client_fn(1)
    assert isinstance(trainer, NumpyMLPTrainer)
    np.testing.assert_allclose(trainer.class_weights / trainer.class_weights[0], [1.0] * 9 + [5.0])
    assert build_task(SimConfig(clients=2)).client_fn(0).class_weights is None


def test_a_bad_class_weight_is_refused_naming_the_field_before_any_work(capsys):
    with pytest.raises(ConfigError, match="class_weight must be 'none', 'balanced' or one positive weight"):
        SimConfig(class_weight="inverse")
    with pytest.raises(ConfigError, match="class_weight lists 2 weights but the model has 10 classes"):
        build_task(SimConfig(class_weight="1,3"))
    assert main(["sim", "--class-weight", "0,1", "--no-store"]) != 0
    assert "class_weight must be" in capsys.readouterr().err
    assert config_from_mapping({"class_weight": "balanced"}).class_weight == "balanced"


def test_the_cli_flag_reaches_the_run_and_is_recorded(tmp_path, capsys):
    home = tmp_path / "home"
    argv = ["sim", "--model", "mlp-numpy", "--clients", "3", "--rounds", "1", "--class-weight", "balanced"]
    assert main([*argv, "--home", str(home)]) == 0
    assert "mlp-numpy" in capsys.readouterr().out
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        assert run.config["class_weight"] == "balanced" and run.config["model"] == "mlp-numpy"
        assert store.metric_series(run.id, "f1_macro") and store.metric_series(run.id, "auc")
        run_id = run.id
    assert main(["runs", "show", run_id, "--home", str(home), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["config"]["class_weight"] == "balanced"
    assert {"auc", "f1_macro", "balanced_accuracy", "accuracy"} <= set(shown["run"]["summary"])
    assert main(["runs", "list", "--home", str(home)]) == 0 and run_id[:8] in capsys.readouterr().out


@pytest.mark.torch
def test_a_torch_model_gets_the_class_weights_too():
    task = build_task(SimConfig(model="logreg-torch", clients=3, class_weight="balanced"))
    trainer = task.client_fn(2)
    present = np.unique(trainer.y.numpy())
    expected = compute_class_weight("balanced", classes=present, y=trainer.y.numpy())
    np.testing.assert_allclose(trainer.class_weights.numpy()[present], expected, rtol=1e-6)


def test_hidden_widths_reach_the_numpy_mlp_and_a_toml_file_may_give_lists(tmp_path):
    trainer = build_task(SimConfig(model="mlp-numpy", clients=2, hidden="16,8")).client_fn(0)
    assert [v.shape for k, v in trainer.get_weights().items() if k.endswith("weight")] == [(16, 64), (8, 16), (10, 8)]
    file = tmp_path / "sim.toml"
    file.write_text('model = "mlp-numpy"\nhidden = [12]\nclass_weight = [1, 1, 1, 1, 1, 1, 1, 1, 1, 9.5]\n')
    config = load_config_file(file)
    assert config.hidden == "12" and config.hidden_sizes() == (12,)
    weights = build_task(config).client_fn(0).class_weights
    np.testing.assert_allclose(weights / weights[0], [1.0] * 9 + [9.5])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"hidden": "64,0"}, r"hidden must be positive layer widths .* --hidden 64,32"),
        ({"hidden": "a"}, r"hidden must be positive layer widths"),
        ({"model": "logreg", "hidden": "8"}, r"hidden sets the layers of mlp / mlp-numpy, not of 'logreg'"),
        ({"model": "mlp-numpy", "model_dropout": 0.2}, r"model_dropout is an option of the torch mlp"),
        ({"model": "mlp", "model_dropout": 1.0}, r"model_dropout must be a probability in \[0, 1\)"),
    ],
)
def test_bad_model_options_are_refused_naming_the_field(fields, match):
    with pytest.raises(ConfigError, match=match):
        SimConfig(**fields)


@pytest.mark.torch
def test_hidden_and_dropout_reach_the_torch_mlp():
    from torch import nn

    trainer = build_task(SimConfig(model="mlp", clients=2, hidden="20", model_dropout=0.25)).client_fn(1)
    layers = list(trainer.model)
    assert [type(m) for m in layers] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert layers[1].out_features == 20 and layers[3].p == 0.25
