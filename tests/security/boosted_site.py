"""A digits site that may be an attacker: it scales its update (local − global) by ``boost``.

``boost=1`` is an honest site (the digits example's own trainer). A large or negative
``boost`` is the model-boosting attack: one site's update outweighs or reverses all the
honest ones under a plain weighted mean, while robust aggregators (median, Krum) drop
it. Started by ``fedloom agent --trainer tests/security/boosted_site.py:make_trainer``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_site.py"


def make_trainer(site: str = "0", sites: str = "3", boost: str = "1") -> Any:
    spec = importlib.util.spec_from_file_location("_fedloom_digits_site", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.make_trainer(site, sites)
    factor = float(boost)
    if factor == 1.0:
        return trainer
    honest_fit = trainer.fit

    def boosted_fit(weights: Any, config: Any) -> Any:
        result = honest_fit(weights, config)
        boosted = {
            name: (weights[name] + factor * (value - weights[name])).astype(value.dtype)
            for name, value in result.weights.items()
        }
        return dataclasses.replace(result, weights=boosted)

    trainer.fit = boosted_fit
    return trainer
