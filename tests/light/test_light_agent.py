"""The light agent against a real aggregator in a thread (real sockets, the real HTTP protocol):
its global models are FedAvg of what its NumPy trainers compute, and a device killed right after
its upload landed re-sends it on restart without being counted twice."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from aggregator_helpers import config
from light_site import initial_model, make_trainer
from live_server import serving

from fedloom.light import LightAgent, LightClient, LightFitConfig, ServerRefusal
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app

SETTINGS = {"epochs": 2, "batch_size": 10_000, "lr": 0.5, "linger_seconds": 0.0}
ROUNDS = 3


def flat_fedavg(sites, rounds):
    """The global models FedAvg makes from these devices' trainers (float64 mean, cast back)."""
    model, models = initial_model(), []
    for r in range(1, rounds + 1):
        results = [
            make_trainer(str(s)).fit(
                model, LightFitConfig(round=r, **{k: SETTINGS[k] for k in ("epochs", "batch_size", "lr")})
            )
            for s in sites
        ]
        total = sum(n for _w, n, _m in results)
        model = {
            k: (sum(w[k].astype(np.float64) * n for w, n, _m in results) / total).astype(np.float32) for k in model
        }
        models.append(model)
    return models


class Crash(BaseException):
    """Stands for the device losing power: nothing in the agent catches it."""


def run_light(url, store, tmp_path, sites, *, crash_after_upload=None):
    """Run one light agent per site in threads; ``crash_after_upload=(site, round)`` kills that
    device just after its upload of that round landed, then restarts it from its state directory."""
    errors, uploads = [], {s: [] for s in sites}

    def one(site):
        name = f"dev-{site}"
        client = LightClient(url, timeout=10)
        real_upload = client.upload

        def upload(payload):
            try:
                answer = real_upload(payload)
            except ServerRefusal as exc:
                uploads[site].append(exc.code)
                raise
            uploads[site].append(answer["round"])
            if crash_after_upload == (site, answer["round"]) and uploads[site].count(answer["round"]) == 1:
                raise Crash
            return answer

        client.upload = upload
        agent = LightAgent(
            client,
            make_trainer(str(site)),
            str(tmp_path / name),
            name,
            store.create_token(name),
            poll_wait=0.5,
            min_poll_interval=0.05,
        )
        try:
            try:
                agent.run()
            except Crash:  # restart: a new agent on the same state directory, no join token needed
                agent = LightAgent(
                    client,
                    make_trainer(str(site)),
                    str(tmp_path / name),
                    name,
                    None,
                    poll_wait=0.5,
                    min_poll_interval=0.05,
                )
                agent.run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors, uploads


def global_models(store, run_id):
    return [store.load_global_model(run_id, m.round) for m in store.list_global_models(run_id)]


def test_light_agents_run_fedavg_with_a_real_aggregator(store, tmp_path):
    agg = Aggregator(config(min_agents=2, max_rounds=ROUNDS, **SETTINGS), store, initial_weights=initial_model())
    with serving(create_app(agg)) as url:
        errors, _ = run_light(url, store, tmp_path, [0, 1])
    assert errors == []
    stored = global_models(store, agg.run_id)
    assert len(stored) == ROUNDS + 1
    for got, want in zip(stored[1:], flat_fedavg([0, 1], ROUNDS), strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    assert not np.allclose(stored[-1]["weight"], 0)  # it learned something
    for site in (0, 1):  # each device kept the final model
        assert (tmp_path / f"dev-{site}" / "global.safetensors").is_file()


def test_a_device_killed_after_its_upload_landed_resends_and_is_counted_once(store, tmp_path):
    agg = Aggregator(config(min_agents=2, max_rounds=ROUNDS, **SETTINGS), store, initial_weights=initial_model())
    with serving(create_app(agg)) as url:
        errors, uploads = run_light(url, store, tmp_path, [0, 1], crash_after_upload=(1, 2))
    assert errors == []
    assert uploads[0] == [1, 2, 3]
    # the restart re-sent round 2's bytes: `duplicate` (or `wrong_round` once round 3 had opened)
    assert uploads[1][:2] == [1, 2] and uploads[1][2] in ("duplicate", "wrong_round") and uploads[1][3:] == [3]
    for r in range(1, ROUNDS + 1):
        assert sorted(m.num_samples for m in store.list_local_models(agg.run_id, round=r)) == [20, 27]
    rounds = store.list_rounds(agg.run_id)
    assert [(r.status, r.num_samples) for r in rounds] == [("closed", 47)] * ROUNDS
    stored = global_models(store, agg.run_id)
    for got, want in zip(stored[1:], flat_fedavg([0, 1], ROUNDS), strict=True):
        np.testing.assert_allclose(got["weight"], want["weight"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field", ["epochs", "batch_size"])
def test_a_task_config_of_the_wrong_type_is_refused_by_name(field):
    with pytest.raises(ValueError, match=f"task config field '{field}' must be an integer"):
        LightFitConfig.from_task({field: "3"}, 1)


def test_a_refused_credential_registers_again_once_with_the_join_token(store, tmp_path):
    from fedloom.light.state import LightState, StateDir

    agg = Aggregator(config(min_agents=1, max_rounds=1, **SETTINGS), store, initial_weights=initial_model())
    StateDir(tmp_path / "dev").save(LightState(name="dev", agent_id="ag_old", credential="fla_" + "x" * 43))
    with serving(create_app(agg)) as url:
        agent = LightAgent(
            LightClient(url, timeout=10),
            make_trainer("0"),
            str(tmp_path / "dev"),
            "dev",
            store.create_token("dev"),
            poll_wait=0.5,
            min_poll_interval=0.05,
        )
        assert agent.run() == "finished"
    state = StateDir(tmp_path / "dev").load()
    assert state.agent_id != "ag_old" and state.credential != "fla_" + "x" * 43 and state.uploaded_round == 1


def test_without_a_credential_or_a_join_token_the_error_says_what_to_set(tmp_path):
    from fedloom.light import LightAgentError

    agent = LightAgent(LightClient("http://127.0.0.1:9", timeout=1), make_trainer("0"), str(tmp_path / "d"), "d")
    with pytest.raises(LightAgentError, match="FEDLOOM_AGENT_TOKEN or pass --token-file"):
        agent.run()
