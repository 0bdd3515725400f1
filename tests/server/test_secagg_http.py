"""Issue 11, secure aggregation in deployment: the SecAgg+ stages over HTTP with real agents
in threads against a real uvicorn (``[secagg] secure_aggregation = "on"``).

The global models equal those of the same federation without secure aggregation within
the quantisation bound; agents that stop answering at a stage are dropouts the round is
rebuilt around (FedAvg of the survivors) or, below the threshold, the round is abandoned
with its recorded reason and the run goes on; hostile stage bodies are refused by field
and recorded."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from aggregator_helpers import config, payload
from live_server import serving

from fedloom.client.agent import Agent
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app
from fedloom.server.secagg_rounds import SecAggRounds
from fedloom.store import SqlStore

pytest.importorskip("cryptography")

#: a model with the shapes real ones have: float32 weights, a float64 tensor, a 0-d float,
#: and BatchNorm's 0-d int64 ``num_batches_tracked``
INIT = {
    "w": np.zeros((2, 3), np.float32),
    "b": np.zeros(3, np.float32),
    "scale": np.array(1.5, np.float64),
    "bn.num_batches_tracked": np.array(7, np.int64),
}
NAMES = ("site-a", "site-b", "site-c")
BITS, CLIP = 20, 1.0
STEP = CLIP / (2**BITS - 1)  # the quantisation step: each element of a delta is off by at most this


def step_of(name: str) -> tuple[float, int]:
    index = NAMES.index(name) if name in NAMES else 3
    return 0.01 * (index + 1) * (-1) ** index, 10 * (index + 1)


class SiteTrainer:
    """Moves every float by a site-specific amount (and counts a batch), so FedAvg is not trivial."""

    def __init__(self, name: str) -> None:
        self.delta, self.samples = step_of(name)

    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        moved = {}
        for key, value in weights.items():
            if value.dtype.kind == "i":
                moved[key] = np.asarray(value + 1, value.dtype)
            else:
                pattern = np.linspace(-1, 1, value.size).reshape(value.shape) if value.ndim else 1.0
                moved[key] = np.asarray(value + self.delta * (1 + np.asarray(pattern)), value.dtype)
        return FitResult(moved, self.samples, {"loss": abs(self.delta)})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def secure(**fields):
    base = {
        "secure_aggregation": "on",
        "bits": BITS,
        "clip_range": CLIP,
        "stage_timeout_seconds": 5.0,
        "min_agents": 3,
        "linger_seconds": 0.0,
    }
    return config(**{**base, **fields})


def run_agents(url, store, tmp_path, names, make_trainer=SiteTrainer, timeout=90.0):
    errors: list[BaseException] = []

    def one(name):
        with AggregatorClient(url, timeout=10) as client:
            token = store.create_token(name)
            agent = Agent(
                client, lambda: make_trainer(name), tmp_path / name, name, token, poll_wait=0.3, handle_signals=False
            )
            try:
                agent.run()
            except BaseException as exc:  # reported to the test
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "an agent did not finish"
    return errors


def final_weights(store, run_id):
    rounds = [m.round for m in store.list_global_models(run_id)]
    return max(rounds), store.load_global_model(run_id, max(rounds))


def fedavg(weights, contributors):
    """The plain weighted mean of the sites' local models trained from ``weights``."""
    models = [(SiteTrainer(n).fit(weights, None).weights, SiteTrainer(n).samples) for n in contributors]
    total = sum(n for _, n in models)
    out = {}
    for key, value in weights.items():
        mean = sum(np.asarray(m[key], np.float64) * n for m, n in models) / total
        out[key] = np.asarray(np.rint(mean) if value.dtype.kind == "i" else mean, value.dtype)
    return out


def assert_close(got, want, rounds):
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        if value.dtype.kind == "i":
            np.testing.assert_array_equal(got[key], value)
        else:
            bound = rounds * STEP + 4 * np.finfo(value.dtype).eps * (1 + np.max(np.abs(value)))
            assert np.max(np.abs(got[key].astype(np.float64) - value.astype(np.float64))) <= bound, key


def rejections(store, run_id, code):
    return [r for r in store.list_rejections(run_id) if r.code == code]


def test_secure_rounds_equal_plain_fedavg_within_the_quantisation_bound(store, tmp_path):
    plain_home = tmp_path / "plain"
    agg = Aggregator(secure(max_rounds=3), store, initial_weights=INIT)
    assert isinstance(agg._state.rounds, SecAggRounds)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, NAMES) == []
    last, secured = final_weights(store, agg.run_id)
    assert last == 3
    expected = dict(INIT)
    for _ in range(3):
        expected = fedavg(expected, NAMES)
    assert_close(secured, expected, rounds=3)
    assert int(secured["bn.num_batches_tracked"]) == 10  # three exact counts on top of 7
    # the plain federation of the same sites ends at the same model (within the bound)
    with SqlStore.open_default(plain_home / "home") as other:
        plain = Aggregator(config(min_agents=3, max_rounds=3, linger_seconds=0.0), other, initial_weights=INIT)
        with serving(create_app(plain)) as url:
            assert run_agents(url, other, plain_home, NAMES) == []
        assert_close(secured, final_weights(other, plain.run_id)[1], rounds=3)
    # each round records its contributors (masked-input hashes, no blobs) and the chain verifies
    locals_ = store.list_local_models(agg.run_id, round=2)
    assert sorted(m.num_samples for m in locals_) == [10, 20, 30]
    assert store.verify_lineage(agg.run_id).ok
    assert rejections(store, agg.run_id, "secagg_dropped") == []


@pytest.fixture
def silent(monkeypatch):
    """``silent.add(site, stage, round)``: that agent stops answering that stage of that round
    (it keeps polling, as an agent whose process hung would hold its connection)."""
    from fedloom.client.secagg_agent import SecAggParticipant

    stops: set[tuple[str, str, int]] = set()
    real = SecAggParticipant.act

    def act(self, task, trainer, call):
        if (self.directory.name, (task.secagg or {}).get("stage"), task.round) in stops:
            return None
        return real(self, task, trainer, call)

    monkeypatch.setattr(SecAggParticipant, "act", act)

    class Stops:
        def add(self, site, stage, round):
            stops.add((site, stage, round))

    return Stops()


FOUR = (*NAMES, "site-d")


def test_dropouts_at_share_and_unmask_leave_fedavg_of_the_survivors(store, tmp_path, silent):
    silent.add("site-d", "share", 1)  # never shares: its input is not in round 1
    silent.add("site-c", "unmask", 2)  # sent its masked input, then went quiet: its input counts
    fields = {"max_rounds": 2, "min_agents": 4, "secagg_threshold": 2, "stage_timeout_seconds": 1.5}
    agg = Aggregator(secure(**fields), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, FOUR) == []
    first = fedavg(dict(INIT), NAMES)
    assert_close(store.load_global_model(agg.run_id, 1), first, rounds=1)
    assert_close(store.load_global_model(agg.run_id, 2), fedavg(first, FOUR), rounds=2)
    ids = {a.name: a.id for a in store.list_agents(agg.run_id)}
    dropped = {(r.round, r.client_id): r.reason for r in rejections(store, agg.run_id, "secagg_dropped")}
    assert set(dropped) == {(1, ids["site-d"])}  # site-c's masked input counts: it is a contributor, not a dropout
    assert "stage 'share'" in dropped[(1, ids["site-d"])]
    assert {m.client_id for m in store.list_local_models(agg.run_id, round=1)} == {ids[n] for n in NAMES}
    assert {m.client_id for m in store.list_local_models(agg.run_id, round=2)} == set(ids.values())
    assert store.verify_lineage(agg.run_id).ok


def test_too_many_dropouts_abandon_the_round_with_the_reason_and_the_run_goes_on(store, tmp_path, silent):
    silent.add("site-b", "share", 1)
    silent.add("site-c", "share", 1)  # one of three left: below the threshold of 2
    agg = Aggregator(secure(max_rounds=2, stage_timeout_seconds=1.5), store, initial_weights=INIT)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, NAMES) == []
    assert [(r.round, r.status) for r in store.list_rounds(agg.run_id)] == [(1, "abandoned"), (2, "closed")]
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 2]
    ids = {a.name: a.id for a in store.list_agents(agg.run_id)}
    [refused] = rejections(store, agg.run_id, "secagg_below_threshold")  # named after the one survivor
    assert refused.round == 1 and refused.client_id == ids["site-a"]
    dropped = {(r.round, r.client_id) for r in rejections(store, agg.run_id, "secagg_dropped")}
    assert dropped == {(1, ids["site-b"]), (1, ids["site-c"])}
    assert "stage 'share'" in refused.reason and "threshold 2" in refused.reason
    assert_close(store.load_global_model(agg.run_id, 2), fedavg(dict(INIT), NAMES), rounds=1)
    assert store.verify_lineage(agg.run_id).ok


def test_hostile_stage_bodies_are_refused_by_field_and_recorded(store, tmp_path):
    from fedloom.algorithms.secagg.fields import encode

    agg = Aggregator(secure(max_rounds=1), store, initial_weights=INIT)
    regs = [join_agent(agg, store, name) for name in NAMES]
    me, other = regs[0], regs[1]
    keys = {"round": 1, "client_id": me.agent_id}
    keys |= {"cipher_public": encode(b"\1" * 32), "mask_public": encode(b"\2" * 32)}
    with serving(create_app(agg)) as url, httpx.Client(base_url=url, timeout=10) as http:
        auth = {"Authorization": f"Bearer {me.credential}"}

        def post(stage, body, **kwargs):
            answer = http.post(f"/v1/secagg/{stage}", json=body, headers=auth, **kwargs)
            return answer.status_code, answer.json()

        assert http.get("/v1/task", headers=auth).json()["secagg"]["stage"] == "advertise"
        status, body = post("advertise", {**keys, "client_id": other.agent_id})
        assert (status, body["error"]) == (403, "client_id_mismatch")
        assert post("advertise", {**keys, "round": 2})[1]["error"] == "wrong_round"
        status, body = post("advertise", {**keys, "cipher_public": "!!not base64!!"})
        assert (status, body["error"]) == (400, "invalid_payload") and "cipher_public" in body["detail"]
        status, body = post("advertise", {**keys, "mask_public": encode(b"\2" * 31)})
        assert (status, body["error"]) == (400, "invalid_payload") and "mask_public" in body["detail"]
        assert post("advertise", {**keys, "extra": 1})[1]["error"] == "invalid_payload"
        share = {"round": 1, "sender": me.agent_id, "shares": {}}
        status, body = post("share", share)
        assert (status, body["error"]) == (409, "wrong_stage")
        assert http.post("/v1/secagg/advertise", content=b"{no", headers=auth).json()["error"] == "invalid_payload"
        assert post("nonsense", keys)[0] == 404
        assert post("advertise", keys) == (200, {"accepted": True, "stage": "advertise"})
        status, body = post("advertise", keys)
        assert (status, body["error"]) == (409, "duplicate")
        assert http.get("/v1/task", headers=auth).json()["state"] == "wait"  # answered: nothing owed
        plain = http.post("/v1/updates", content=payload(me.agent_id, 1), headers=auth)
        assert (plain.status_code, plain.json()["error"]) == (409, "secagg_required")
        big = {**keys, "cipher_public": "A" * 200_000}
        assert post("advertise", big)[1]["error"] == "payload_too_large"
        # the masked input's limit follows from the model: 12 words here, so 100 kB is far over it
        words = {"round": 1, "client_id": me.agent_id, "words": encode(b"\0" * 8 * 12)}
        masked = {"masked_input": words, "num_samples": 10, "metrics": {}}
        status, body = post("collect", masked)
        assert (status, body["error"]) == (409, "wrong_stage")  # the right size: refused for its stage only
        status, body = post("collect", {**masked, "metrics": {"pad": 1.0, "x" * 100_000: 1.0}})
        assert (status, body["error"]) == (413, "payload_too_large")
    codes = [r.code for r in store.list_rejections(agg.run_id)]
    for code in ("client_id_mismatch", "wrong_round", "invalid_payload", "wrong_stage", "not_found", "duplicate"):
        assert code in codes, code
    assert "secagg_required" in codes and "payload_too_large" in codes
    assert store.list_local_models(agg.run_id) == []  # nothing but the one accepted key message changed


def join_agent(agg, store, name):
    return agg.register(name, store.create_token(name))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"mode": "async"}, "mode = 'sync'"),
        ({"strategy": "fedavg", "aggregator": "median"}, "'median'"),
        ({"filter_max_distance": 5.0}, "update filter"),
        ({"secagg_threshold": 0.4}, "secagg_threshold"),
        ({"secagg_threshold": 2.5}, "secagg_threshold"),
        ({"bits": 60}, "bits"),
        ({"rounding": "up"}, "rounding"),
    ],
)
def test_settings_secure_aggregation_cannot_run_are_refused_at_start_by_name(store, fields, words):
    with pytest.raises(ConfigError, match="secagg") as refused:
        Aggregator(secure(**fields), store, initial_weights=INIT)
    assert words in str(refused.value)
    assert store.find_run(secure().run.name, kind="deployment") is None  # refused before a run was opened
