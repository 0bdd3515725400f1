"""A deployed run with a ``[privacy]`` table: the aggregator's strategy is private, ε is stored per
round by the same engine path as simulation, and client mode reaches agents as a client part."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# the in-process deployment helpers of the tracking tests (a module by a unique name there)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tracking"))
from tracking_helpers import deployment_config, join, upload_body, weights_of

from fedloom.algorithms.privacy_accountant import WithoutReplacement, gaussian_epsilon
from fedloom.client.answers import fit_config_from
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core import to_bytes
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitResult
from fedloom.server.aggregator import Aggregator
from fedloom.server.config import config_from_mapping
from fedloom.server.run_setup import deployment_strategy
from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")

DP = {"dp_mode": "central", "dp_noise_multiplier": 1.5, "dp_clip_norm": 2.0, "dp_delta": 1e-3, "dp_noise_seed": 4}


def test_privacy_table_makes_the_deployed_run_private_and_stores_epsilon(tmp_path: Path) -> None:
    with SqlStore.open_default(tmp_path / "home") as store:
        aggregator = Aggregator(deployment_config(**DP), store, initial_weights=weights_of(0.0))
        agents = [join(aggregator, store, f"site-{i}") for i in range(3)]
        for round in (1, 2):
            for i, agent in enumerate(agents):
                aggregator.submit_update(agent, upload_body(agent.id, round, round * (i + 1), 10 * (i + 1)))
        aggregator.close()
        run_id = aggregator.run_id
        epsilon = store.metric_series(run_id, "privacy/epsilon")
        # every agent each round: the unsampled Gaussian, z = 1.5 accounted as 0.75 (replace-one, 2C)
        assert epsilon == [(r, gaussian_epsilon(0.75, WithoutReplacement(3, 3), r, 1e-3)) for r in (1, 2)]
        assert dict(store.metric_series(run_id, "privacy/clip_norm")) == {1: 2.0, 2: 2.0}
        final = store.load_global_model(run_id, 2)
        assert int(final["bn.num_batches_tracked"]) == 0  # counters keep the global value
        assert store.get_run(run_id).config["privacy"]["dp_mode"] == "central"


def test_client_mode_travels_to_agents_and_their_uploads_are_clipped(tmp_path: Path) -> None:
    dp = {**DP, "dp_mode": "client", "dp_noise_multiplier": 1e-6}
    with SqlStore.open_default(tmp_path / "home") as store:
        aggregator = Aggregator(deployment_config(**dp, max_rounds=1), store, initial_weights=weights_of(0.0))
        agents = [join(aggregator, store, f"site-{i}") for i in range(3)]
        for agent in agents:
            task = aggregator.task_for(agent.id)
            assert task.state == "train" and task.config is not None
            config = fit_config_from(task.config, task.round)
            assert config.extra["client_parts"] == ["dp"] and config.extra["dp_noise_shares"] == 3

            class FarTrainer:  # moves every float tensor by 10: far beyond the clip norm 2
                def fit(self, weights, fit_config):  # type: ignore[no-untyped-def]
                    moved = {k: v + 10 if v.dtype.kind == "f" else v for k, v in weights.items()}
                    return FitResult(moved, 10, {"loss": 1.0})

            result = fit_with_state(FarTrainer(), weights_of(0.0), config, LocalContext(agent.name))
            floats = np.concatenate([result.weights[k].ravel() for k in ("w", "b")])
            assert np.linalg.norm(floats) == pytest.approx(2.0, rel=1e-4)  # clipped at the agent
            body = to_bytes(result.weights, round=1, client_id=agent.id, num_samples=10)
            aggregator.submit_update(agent, body)
        aggregator.close()
        assert len(store.metric_series(aggregator.run_id, "privacy/epsilon")) == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"dp_mode": "central", "dp_noise_multiplier": 1.0, "dp_delta": 1e-5}, "clip_norm is missing"),
        ({"dp_noise_multiplier": 1.0}, "dp_mode is missing"),
        ({"dp_mode": "central", "dp_noise_multiplier": 1.0, "dp_clip_norm": 1.0, "dp_delta": 0.5}, "delta"),
    ],
)
def test_bad_privacy_tables_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        # a table can be fine on its own and refused with the federation's size ([rounds] min_agents)
        deployment_strategy(config_from_mapping({"privacy": table, "rounds": {"min_agents": 3}}))


def test_privacy_with_async_or_a_robust_aggregator_is_refused() -> None:
    table = {k: v for k, v in DP.items() if k != "dp_noise_seed"}
    with pytest.raises(ConfigError, match="mode = 'async'"):
        config_from_mapping({"privacy": table, "run": {"mode": "async"}})

    config = config_from_mapping({"privacy": table, "strategy": {"strategy": "median"}, "rounds": {"min_agents": 3}})
    with pytest.raises(ConfigError, match="not bounded by the clip norm"):
        deployment_strategy(config)


def test_a_restarted_aggregator_keeps_counting_the_rounds_already_released(tmp_path: Path) -> None:
    config = deployment_config(**DP)
    with SqlStore.open_default(tmp_path / "home") as store:
        first = Aggregator(config, store, initial_weights=weights_of(0.0))
        agents = [join(first, store, f"site-{i}") for i in range(3)]
        for i, agent in enumerate(agents):
            first.submit_update(agent, upload_body(agent.id, 1, i + 1.0, 10))
        first.close()
        second = Aggregator(config, store)  # resumes the run at round 2
        assert second.run_id == first.run_id
        for i, agent in enumerate(agents):
            second.submit_update(store.get_agent(agent.id), upload_body(agent.id, 2, i + 2.0, 10))
        second.close()
        epsilon = dict(store.metric_series(second.run_id, "privacy/epsilon"))
        assert epsilon[2] == pytest.approx(gaussian_epsilon(0.75, WithoutReplacement(3, 3), 2, 1e-3))


def test_a_deployed_run_records_its_mode_for_runs_show_and_the_dashboard(tmp_path: Path) -> None:
    from fedloom.algorithms.dp.report import recorded_mode

    with SqlStore.open_default(tmp_path / "home") as store:
        aggregator = Aggregator(deployment_config(**{**DP, "dp_mode": "local"}), store, initial_weights=weights_of(0.0))
        aggregator.close()
        assert recorded_mode(store.get_run(aggregator.run_id).config) == "local"


def test_a_deployed_run_finishes_before_a_round_would_exceed_the_target(tmp_path: Path) -> None:
    per_round = [gaussian_epsilon(0.75, WithoutReplacement(3, 3), r, 1e-3) for r in (1, 2, 3)]
    target = (per_round[1] + per_round[2]) / 2  # round 2 fits, round 3 would not
    config = deployment_config(**DP, max_rounds=10, dp_target_epsilon=target)
    with SqlStore.open_default(tmp_path / "home") as store:
        aggregator = Aggregator(config, store, initial_weights=weights_of(0.0))
        agents = [join(aggregator, store, f"site-{i}") for i in range(3)]
        for round in (1, 2):
            for i, agent in enumerate(agents):
                aggregator.submit_update(agent, upload_body(agent.id, round, round * (i + 1), 10))
        assert aggregator.task_for(agents[0].id).state == "finished"
        assert aggregator.status()["state"] == "finished"
        aggregator.close()
        run_id = aggregator.run_id
        assert [r.round for r in store.list_rounds(run_id)] == [1, 2]
        assert dict(store.metric_series(run_id, "privacy/target_epsilon_reached")) == {2: 1.0}
        assert store.get_run(run_id).status == "finished"
