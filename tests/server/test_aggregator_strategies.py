"""The deployment aggregator runs the algorithm library: [strategy] in its config."""

from __future__ import annotations

import numpy as np
import pytest
from aggregator_helpers import INIT, config, join, payload

from fedloom.core import from_bytes
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.config import config_from_mapping


def run_round(aggregator, store, agents, round_no, values):
    for agent, value in zip(agents, values, strict=True):
        aggregator.submit_update(agent, payload(agent.id, round_no, value))


def global_w(aggregator, round_no):
    weights, _ = from_bytes(aggregator.global_model_bytes(round_no)[0])
    return weights["w"]


def test_fedavgm_state_survives_a_restart(store, clock):
    cfg = config(min_agents=2, max_rounds=3, strategy="fedavgm", server_momentum=0.5)
    first = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(first, store, f"site-{i}").agent_id) for i in range(2)]
    run_round(first, store, agents, 1, [1.0, 1.0])  # delta 1: v = 1, x = 1
    np.testing.assert_allclose(global_w(first, 2), 1.0)
    del first  # killed: the momentum lives only in memory

    second = Aggregator(cfg, store, clock=clock)
    run_round(second, store, agents, 2, [2.0, 2.0])  # delta 1: v = 0.5 * 1 + 1 = 1.5, x = 2.5
    np.testing.assert_allclose(global_w(second, 3), 2.5)


def test_a_robust_aggregator_and_a_filter_in_deployment(store, clock):
    cfg = config(min_agents=3, max_rounds=1, strategy="median", filter_max_distance=100.0)
    aggregator = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(aggregator, store, f"site-{i}").agent_id) for i in range(3)]
    with pytest.raises(RequestRefusedError, match="filter allows at most 100"):
        aggregator.submit_update(agents[0], payload(agents[0].id, 1, 1e4))
    assert [r.code for r in store.list_rejections(aggregator.run_id)] == ["filtered"]
    run_round(aggregator, store, agents, 1, [1.0, 2.0, 30.0])
    np.testing.assert_allclose(global_w(aggregator, 2), 2.0)  # the median, not the mean 11


def test_strategy_table_errors_name_the_table():
    with pytest.raises(ConfigError, match=r"\[strategy\].*'trim_beta' is not used by strategy 'fedadam'"):
        config_from_mapping({"strategy": {"strategy": "fedadam", "trim_beta": 0.1}})
    with pytest.raises(ConfigError, match="not available with \\[run\\] mode = 'async'"):
        config_from_mapping({"run": {"mode": "async"}, "strategy": {"strategy": "krum"}})


def test_the_strategy_cannot_change_when_a_run_resumes(store, clock):
    Aggregator(config(strategy="fedavg"), store, clock=clock, initial_weights=INIT)
    with pytest.raises(ConfigError, match="strategy"):
        Aggregator(config(strategy="median"), store, clock=clock)


def test_scaffold_control_variate_lives_in_the_global_model(store, clock):
    from fedloom.algorithms.scaffold import CONTROL_PREFIX
    from fedloom.core import to_bytes

    cfg = config(min_agents=2, max_rounds=2, strategy="scaffold", fraction=1.0)
    aggregator = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(aggregator, store, f"site-{i}").agent_id) for i in range(2)]
    first, _ = from_bytes(aggregator.global_model_bytes(1)[0])
    assert {k for k in first if k.startswith(CONTROL_PREFIX)} == {CONTROL_PREFIX + "w", CONTROL_PREFIX + "b"}
    for agent, delta in zip(agents, (0.2, 0.4), strict=True):
        weights = {k: np.full_like(v, 1.0 if not k.startswith(CONTROL_PREFIX) else delta) for k, v in first.items()}
        aggregator.submit_update(agent, to_bytes(weights, round=1, client_id=agent.id, num_samples=10))
    second, _ = from_bytes(aggregator.global_model_bytes(2)[0])
    np.testing.assert_allclose(second["w"], 1.0)
    np.testing.assert_allclose(second[CONTROL_PREFIX + "w"], 0.3, rtol=1e-6)  # 0 + (2/2) * mean(0.2, 0.4)
