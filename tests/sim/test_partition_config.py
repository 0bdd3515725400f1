"""SimConfig's partition fields: each only with its scheme, each checked, named as the CLI flags."""

import numpy as np
import pytest

from fedloom.core.errors import ConfigError
from fedloom.sim.config import PARTITIONS, SimConfig, config_from_mapping
from fedloom.sim.partition import PARTITION_SCHEMES
from fedloom.sim.tasks import build_task


def test_every_scheme_is_a_config_choice():
    assert PARTITIONS == PARTITION_SCHEMES
    assert {"natural", "inner_dirichlet", "size_skew", "feature_skew"} <= set(PARTITIONS)


def test_natural_needs_partition_by_and_partition_by_needs_natural():
    config = config_from_mapping({"partition": "natural", "partition_by": "site"})
    assert (config.partition, config.partition_by) == ("natural", "site")
    with pytest.raises(ConfigError, match=r"partition natural needs partition_by.*--by site"):
        SimConfig(partition="natural")
    with pytest.raises(ConfigError, match=r"partition_by \(--by\) only applies to partition natural.*'iid'"):
        SimConfig(partition_by="site")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"client_sizes": [1, 2]}, r"client_sizes \(--client-sizes\) only applies to partition inner_dirichlet"),
        ({"size_skew": "square"}, r"size_skew \(--size-skew\) only applies to partition size_skew, got .*'iid'"),
        ({"size_skew_rate": 0.5, "partition": "dirichlet"}, r"size_skew_rate \(--size-skew-rate\) only applies"),
        ({"feature_clusters": 4}, r"feature_clusters \(--feature-clusters\) only applies to partition feature_skew"),
        ({"partition": "size_skew", "size_skew": "cubic"}, r"size_skew must be one of linear, square, exponential"),
        ({"partition": "size_skew", "size_skew_rate": 0.0}, r"size_skew_rate must be > 0"),
        ({"partition": "size_skew", "size_skew_rate": float("inf")}, r"size_skew_rate must be > 0"),
        ({"partition": "feature_skew", "feature_clusters": 0}, r"feature_clusters >= 1, got .* and 0"),
        ({"partition": "inner_dirichlet", "clients": 3, "client_sizes": [5, 5]}, r"client_sizes must list 3 whole"),
        ({"partition": "inner_dirichlet", "clients": 2, "client_sizes": [5, 0]}, r"numbers >= 1 .*got \[5, 0\]"),
        ({"partition": "inner_dirichlet", "clients": 2, "client_sizes": [5, True]}, r"client_sizes must list 2"),
        ({"partition": "inner_dirichlet", "client_sizes": "5,5"}, r"'client_sizes' must be list"),
    ],
)
def test_bad_partition_fields_name_the_field_and_flag(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_mapping(values)


def test_partition_options_carry_what_each_scheme_reads():
    assert SimConfig().partition_options(features=np.zeros(3)) == {}
    sizes = SimConfig(partition="inner_dirichlet", clients=2, client_sizes=[600, 747])
    assert sizes.partition_options() == {"client_sizes": [600, 747]}
    assert SimConfig(partition="inner_dirichlet").partition_options() == {}
    skew = SimConfig(partition="size_skew", size_skew="exponential", size_skew_rate=0.5)
    assert skew.partition_options() == {"size_skew": "exponential", "size_skew_rate": 0.5}
    x = np.ones((4, 2))
    assert SimConfig(partition="feature_skew").partition_options(features=x)["features"] is x
    groups = np.array(["a", "b"])
    assert SimConfig(partition="natural", partition_by="site").partition_options(groups=groups)["groups"] is groups


@pytest.mark.parametrize(
    ("values", "check"),
    [
        ({"partition": "size_skew", "size_skew": "linear", "clients": 5}, lambda s: s == [90, 180, 269, 359, 449]),
        ({"partition": "inner_dirichlet", "clients": 2, "client_sizes": [1000, 347]}, lambda s: s == [1000, 347]),
        ({"partition": "feature_skew", "alpha": 0.1, "clients": 5, "feature_clusters": 5}, lambda s: sum(s) == 1347),
    ],
)
def test_the_built_in_task_partitions_with_the_new_schemes(values, check):
    task = build_task(SimConfig(dataset="digits", model="logreg", **values))
    sizes = [p.size for p in task.partitions]
    assert check(sizes), sizes
    assert np.array_equal(np.sort(np.concatenate(task.partitions)), np.arange(1347))
