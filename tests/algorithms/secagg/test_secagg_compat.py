"""Only the weighted-mean family combines with secure aggregation; the rest is refused with why."""

import pytest

from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.secagg import check_secure_compatible
from fedloom.core.errors import ConfigError


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedadagrad", "fedyogi"])
def test_the_weighted_mean_family_is_accepted(name):
    check_secure_compatible(build_strategy(name))


@pytest.mark.parametrize(
    ("name", "aggregator"),
    [
        ("fedavg", "median"),
        ("fedavg", "trimmed_mean"),
        ("fedavg", "krum"),
        ("fedavg", "multikrum"),
        ("fedavg", "bulyan"),
        ("fedavg", "geometric_median"),
        ("fedavg", "norm_bounded"),
        ("fedavg", "centered_clip"),
        ("fednova", None),
        ("qfedavg", None),
        ("scaffold", None),
        ("fedcurv", None),
        ("fedavg", "feddyn"),
    ],
)
def test_aggregators_that_need_each_update_are_refused_saying_why(name, aggregator):
    strategy = build_strategy(name, aggregator=aggregator) if aggregator else build_strategy(name)
    with pytest.raises(ConfigError, match="only the sum of the updates") as info:
        check_secure_compatible(strategy)
    assert repr(strategy.aggregator.name) in str(info.value)


def test_an_update_filter_is_refused():
    strategy = build_strategy("fedavg", params={"filter_max_distance": 3.0})
    with pytest.raises(ConfigError, match="update filter"):
        check_secure_compatible(strategy)
