import pytest

from fedloom.algorithms.aggregators import MultiKrum, QFedAvg, TrimmedMean
from fedloom.algorithms.registry import STRATEGIES, build_strategy
from fedloom.algorithms.server_opt import AdaptiveServerOpt, FedAvgM
from fedloom.core.errors import ConfigError


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_builds_with_defaults(name):
    strategy = build_strategy(name, lr=0.05)
    assert strategy.name == name
    assert strategy.describe()["name"] == name


def test_fedadam_with_server_lr():
    strategy = build_strategy("fedadam", params={"server_lr": 0.02, "beta2": 0.999})
    assert strategy.server_opt == AdaptiveServerOpt("fedadam", server_lr=0.02, beta2=0.999)
    assert strategy.mergeable  # the mean is still pre-merged; the optimiser runs on the aggregate


def test_parts_combine():
    strategy = build_strategy(
        "fedprox", aggregator="trimmed_mean", server_opt="fedavgm", params={"proximal_mu": 0.1, "trim_beta": 0.1}
    )
    assert strategy.client.extra == {"proximal_mu": 0.1, "client_parts": ["fedprox"]}
    assert strategy.aggregator == TrimmedMean(0.1)
    assert isinstance(strategy.server_opt, FedAvgM)
    assert not strategy.mergeable


def test_qfedavg_takes_the_client_lr_and_asks_for_the_initial_loss():
    strategy = build_strategy("qfedavg", lr=0.2, params={"q": 2})
    assert strategy.aggregator == QFedAvg(q=2.0, lr=0.2)
    assert strategy.client.extra["report_initial_loss"] is True


def test_multikrum_params():
    assert build_strategy("multikrum", params={"byzantine_f": 2, "multikrum_m": 4}).aggregator == MultiKrum(2, 4)


def test_filter_params_make_the_strategy_unmergeable():
    strategy = build_strategy("fedavg", params={"filter_max_distance": 5.0})
    assert strategy.update_filter is not None and strategy.update_filter.max_distance == 5.0
    assert not strategy.mergeable


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown strategy 'fedsgd'.*fedadam"):
        build_strategy("fedsgd")


def test_parameter_of_another_part_says_where_it_belongs():
    with pytest.raises(ConfigError, match=r"'trim_beta' is not used by strategy 'fedadam'.*aggregator trimmed_mean"):
        build_strategy("fedadam", params={"trim_beta": 0.1})


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match="unknown strategy parameter 'server_learning_rate'"):
        build_strategy("fedadam", params={"server_learning_rate": 0.1})


@pytest.mark.parametrize("value", ["fast", True, 1.5])
def test_parameter_types_are_checked(value):
    with pytest.raises(ConfigError, match="byzantine_f must be int"):
        build_strategy("krum", params={"byzantine_f": value})


def test_bad_values_name_the_flag():
    with pytest.raises(ConfigError, match="--server-lr"):
        build_strategy("fedyogi", params={"server_lr": -1})


def test_curvature_lambda_only_with_fedcurv():
    assert build_strategy("fedcurv", params={"curvature_lambda": 0.5}).client.extra["curvature_lambda"] == 0.5
    with pytest.raises(ConfigError, match=r"'curvature_lambda' is not used by strategy 'fedavg'.*aggregator fedcurv"):
        build_strategy("fedavg", params={"curvature_lambda": 0.5})


def test_a_hand_built_strategy_must_name_its_aggregators_client_part():
    from fedloom.algorithms import ClientSampler, ClientSettings, Strategy
    from fedloom.algorithms.scaffold import Scaffold

    with pytest.raises(ConfigError, match=r"aggregator 'scaffold' has a client part.*client_parts"):
        Strategy("mine", ClientSampler(0.5), Scaffold(), ClientSettings())
    named = ClientSettings(extra={"client_parts": ["scaffold"]})
    assert Strategy("mine", ClientSampler(0.5), Scaffold(), named).keeps_client_state
