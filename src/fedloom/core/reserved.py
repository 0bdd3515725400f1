"""Reserved tensors: strategy state that travels inside the global model.

Some strategies keep server state that clients must read (SCAFFOLD's control variate,
FedCurv's Fisher sums, FedDyn's h). It rides in the model's tensor dict under names
starting ``fedloom.``, so it is validated, sent, stored and restored exactly like the
model, and a restarted aggregator has it without another table. Evaluation and export
strip it (:func:`model_part`). Each algorithm owns its own prefix under ``fedloom.`` (in
its module, ``fedloom.algorithms.<name>``); core only keeps the reservation itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.core.weights import Weights

RESERVED_PREFIX = "fedloom."


def model_part(weights: Mapping[str, np.ndarray]) -> Weights:
    """The user's model without fedloom's reserved tensors."""
    return {k: v for k, v in weights.items() if not k.startswith(RESERVED_PREFIX)}


def reserved_part(weights: Mapping[str, np.ndarray]) -> Weights:
    """Only fedloom's reserved tensors (what :func:`model_part` strips)."""
    return {k: v for k, v in weights.items() if k.startswith(RESERVED_PREFIX)}


def with_prefix(weights: Mapping[str, np.ndarray], prefix: str) -> Weights:
    """The tensors under ``prefix``, keyed by the model tensor they belong to."""
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def with_zeros(weights: Mapping[str, np.ndarray], *prefixes: str) -> Weights:
    """``weights`` plus a zero tensor under each prefix for every floating-point model tensor."""
    out = dict(weights)
    for name, value in model_part(weights).items():
        if value.dtype.kind == "f":
            for prefix in prefixes:
                out.setdefault(prefix + name, np.zeros_like(value))
    return out
