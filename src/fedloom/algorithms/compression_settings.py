"""A run's choice of compressed updates, attached to its strategy for simulation and deployment alike.

The scheme travels to every client inside ``FitConfig.extra["compression"]`` (the same
field in ``fedloom sim --compression`` and in ``[client] compression``), so one helper
puts it there and one reads it back: the client encodes under it, the aggregator
decodes under it, and a run whose clients keep an error-feedback residual keeps client
state (:attr:`~fedloom.algorithms.strategy.Strategy.keeps_client_state`).
"""

from __future__ import annotations

import dataclasses

from fedloom.algorithms.strategy import Strategy
from fedloom.core.compression import EXTRA_KEY, CompressionSpec, spec_from_extra, spec_to_extra

#: the schemes a run may choose; "none" sends plain models
CHOICES = ("none", "float16", "int8", "topk")


def compression_spec(scheme: str, topk_fraction: float) -> CompressionSpec | None:
    """The spec of a run's ``scheme`` (None for "none"); a wrong scheme or fraction is a ConfigError."""
    return None if scheme == "none" else CompressionSpec(scheme, topk_fraction)


def with_compression(strategy: Strategy, spec: CompressionSpec | None) -> Strategy:
    """``strategy`` whose clients send updates compressed under ``spec`` (unchanged for None)."""
    if spec is None:
        return strategy
    client = dataclasses.replace(strategy.client, extra={**strategy.client.extra, EXTRA_KEY: spec_to_extra(spec)})
    return dataclasses.replace(strategy, client=client)


def compression_of(strategy: Strategy) -> CompressionSpec | None:
    """The compression ``strategy``'s clients use, or None."""
    return spec_from_extra(strategy.client.extra)


__all__ = ["CHOICES", "compression_of", "compression_spec", "with_compression"]
