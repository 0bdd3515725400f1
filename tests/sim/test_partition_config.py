"""SimConfig's partition fields: each only with its scheme, each checked, named as the CLI flags."""

import pytest

from fedloom.core.errors import ConfigError
from fedloom.sim.config import PARTITIONS, SimConfig, config_from_mapping
from fedloom.sim.partition import PARTITION_SCHEMES


def test_every_scheme_is_a_config_choice():
    assert PARTITIONS == PARTITION_SCHEMES
    assert {"natural"} <= set(PARTITIONS)


def test_natural_needs_partition_by_and_partition_by_needs_natural():
    config = config_from_mapping({"partition": "natural", "partition_by": "site"})
    assert (config.partition, config.partition_by) == ("natural", "site")
    with pytest.raises(ConfigError, match=r"partition natural needs partition_by.*--by site"):
        SimConfig(partition="natural")
    with pytest.raises(ConfigError, match=r"partition_by \(--by\) only applies to partition natural.*'iid'"):
        SimConfig(partition_by="site")
