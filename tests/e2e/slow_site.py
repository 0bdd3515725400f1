"""A digits site whose training takes ``delay`` seconds longer (for tests that act mid-round)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_site.py"


def make_trainer(site: str = "0", sites: str = "3", delay: str = "0") -> Any:
    spec = importlib.util.spec_from_file_location("_fedloom_digits_site", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.make_trainer(site, sites)
    fit = trainer.fit
    pause = float(delay)

    def slow_fit(weights: Any, config: Any, *terms: Any) -> Any:  # passes the client-side terms hook on
        time.sleep(pause)
        return fit(weights, config, *terms)

    trainer.fit = slow_fit
    return trainer
