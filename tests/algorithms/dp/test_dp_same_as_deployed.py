"""One code path: a DP simulation and the deployed aggregator with the same ``[privacy]`` give the
same global models bit for bit (seeded noise, for the comparison only) and the same ε per round,
with a deadline that drops slow clients (the fixed denominator m stays the number selected)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# the differential harness of the simulation tests (a module by a unique name there)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sim"))
from test_same_as_deployed import Deployed, _assert_same, _sim_config, run_sync, simulated

from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")

PRIVACY = {"noise_multiplier": 0.5, "clip_norm": 0.5, "delta": 1e-3, "noise_seed": 7}


def _epsilon(home: Path) -> list[tuple[int, float]]:
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        return store.metric_series(run.id, "privacy/epsilon")


@pytest.mark.parametrize(
    "privacy",
    [{"mode": "central"}, {"mode": "central", "adaptive_clip": True, "clip_count_stddev": 1.0}, {"mode": "client"}],
)
def test_dp_simulation_matches_the_deployed_aggregator(tmp_path: Path, privacy: dict[str, object]) -> None:
    settings = {**PRIVACY, **privacy}
    changes = {"deadline_seconds": 3.5, "on_deadline": "aggregate", "fraction": 0.7}
    sim = simulated(tmp_path, **changes, privacy=settings)
    table = {f"dp_{k}": v for k, v in settings.items() if k != "adaptive_clip"}
    if privacy.get("adaptive_clip"):
        table["dp_target_quantile"] = 0.5
    deployed_config = {"deadline_seconds": 3.5, "deadline_policy": "aggregate", "fraction": 0.7, **table}
    deployed = run_sync(Deployed(tmp_path, _sim_config(**changes, privacy=settings), **deployed_config))
    assert list(_assert_same(sim, deployed)) == [1, 2, 3, 4, 5]
    sim_epsilon, deployed_epsilon = _epsilon(tmp_path / "sim"), _epsilon(tmp_path / "deployed")
    assert [r for r, _ in sim_epsilon] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal([e for _, e in sim_epsilon], [e for _, e in deployed_epsilon])
