"""fedloom.algorithms — aggregation maths and strategy composition; imports only fedloom.core."""

from fedloom.algorithms.mean import WeightedMeanAccumulator, weighted_mean
from fedloom.algorithms.registry import AGGREGATORS, SERVER_OPTIMIZERS, STRATEGIES, build_strategy
from fedloom.algorithms.sampling import ClientSampler
from fedloom.algorithms.strategy import (
    Accumulator,
    Aggregator,
    ClientSettings,
    MergeableAccumulator,
    RoundCriteria,
    Strategy,
    WeightedMean,
    fedavg,
)

__all__ = [
    "AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "STRATEGIES",
    "Accumulator",
    "Aggregator",
    "ClientSampler",
    "ClientSettings",
    "MergeableAccumulator",
    "RoundCriteria",
    "Strategy",
    "WeightedMean",
    "WeightedMeanAccumulator",
    "build_strategy",
    "fedavg",
    "weighted_mean",
]
