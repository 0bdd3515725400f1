"""What travels to a client as JSON (FitConfig) is kept apart from what the local runtime adds."""

import json

from fedloom import simulate
from fedloom.algorithms.registry import build_strategy
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import SequentialExecutor
from fedloom.sim.options import Recording
from fedloom.sim.tasks import build_task


class RecordingExecutor(SequentialExecutor):
    def __init__(self):
        self.seen = []

    def run_round(self, round, weights, configs, client_fn, merge=False, state_dir=None):
        self.seen.append((dict(configs), state_dir))
        return super().run_round(round, weights, configs, client_fn, merge, state_dir)


def test_the_fit_config_is_pure_wire_json_and_the_state_folder_travels_beside_it(tmp_path):
    task = build_task(SimConfig(dataset="digits", clients=6, partition="shards", seed=0))
    strategy = build_strategy("scaffold", fraction=0.5, lr=0.5, params={"personal_keys": "bias"})
    executor = RecordingExecutor()
    state = tmp_path / "state"
    simulate(
        task.client_fn, 6, strategy, 2, initial_weights=task.initial_weights, executor=executor,
        recording=Recording(store=None, client_state_dir=str(state)), observers=[],
    )  # fmt: skip
    for configs, state_dir in executor.seen:
        assert state_dir == str(state)
        for config in configs.values():
            wire = json.loads(json.dumps(dict(config.extra)))  # JSON only, as an agent receives it
            assert wire == {"client_parts": ["scaffold"], "personal_keys": ["bias"]}
            assert str(state) not in json.dumps(wire)
    kept = sorted(p.relative_to(state).as_posix() for p in state.rglob("*.safetensors"))
    assert kept and all(p.split("/")[0] in ("scaffold", "personal") for p in kept)
