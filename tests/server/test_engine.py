import numpy as np
import pytest

from fedloom.algorithms import RoundCriteria, fedavg
from fedloom.core import ClientUpdate, RejectedUpdateError
from fedloom.server import EngineState, EngineStateError, RoundEngine

INIT = {"w": np.zeros(3, np.float32)}


class ListRecorder:
    def __init__(self):
        self.events = []

    def round_opened(self, round, selected):
        self.events.append(("opened", round, tuple(selected)))

    def update_accepted(self, report, weights):
        self.events.append(("accepted", report.round, report.client_id))

    def update_rejected(self, round, client_id, code, reason):
        self.events.append(("rejected", round, client_id, code, reason))

    def round_closed(self, outcome):
        self.events.append(("closed", outcome.round, outcome.num_updates))


def make_engine(fraction=1.0, clients=4, criteria=None, caps=None, max_rounds=3):
    rec = ListRecorder()
    engine = RoundEngine(
        fedavg(fraction=fraction, criteria=criteria), INIT, seed=0, max_rounds=max_rounds, recorder=rec
    )
    for i in range(clients):
        engine.register_client(f"c{i}", (caps or {}).get(f"c{i}"))
    return engine, rec


def upd(cid, round, value, n=10):
    return ClientUpdate(cid, round, {"w": np.full(3, value, np.float32)}, n)


def test_full_round_aggregates_by_formula_and_advances():
    engine, rec = make_engine()
    task = engine.open_round()
    assert task.round == 1 and task.selected == ("c0", "c1", "c2", "c3")
    for i, cid in enumerate(task.selected):
        engine.submit(upd(cid, 1, float(i), n=i + 1))
    assert engine.all_received() and engine.criteria_met()
    outcome = engine.close_round()
    expected = sum((i + 1) * i for i in range(4)) / sum(range(1, 5))  # (0+2+6+12)/10 = 2.0
    np.testing.assert_allclose(outcome.weights["w"], expected)
    assert outcome.num_samples == 10 and outcome.num_updates == 4 and outcome.missing == ()
    assert engine.current_round == 2 and engine.state is EngineState.IDLE
    assert rec.events[0][0] == "opened" and rec.events[-1] == ("closed", 1, 4)


@pytest.mark.parametrize(
    ("make_update", "code", "reason"),
    [
        (lambda: upd("c0", 2, 1.0), "wrong_round", "for round 2 but round 1 is open"),
        (lambda: upd("zz", 1, 1.0), "unknown_client", "'zz' is not registered"),
        (lambda: ClientUpdate("c0", 1, {"w": np.zeros(4, np.float32)}, 5), "invalid_weights", "shape"),
        (lambda: ClientUpdate("c0", 1, {"w": np.array([0, np.nan, 0], np.float32)}, 5), "invalid_weights", "NaN"),
        (lambda: ClientUpdate("c0", 1, {"w": np.zeros(3, np.float64)}, 5), "invalid_weights", "dtype"),
        (lambda: ClientUpdate("c0", 1, {"v": np.zeros(3, np.float32)}, 5), "invalid_weights", "missing"),
        (lambda: upd("c1", 1, 1.0, n=1000), "bad_num_samples", "claims 1000 samples but holds 50"),
    ],
)
def test_rejections_are_raised_recorded_and_change_nothing(make_update, code, reason):
    engine, rec = make_engine(caps={"c1": 50})
    engine.open_round()
    before = engine.global_weights
    with pytest.raises(RejectedUpdateError, match=reason) as info:
        engine.submit(make_update())
    assert info.value.code == code
    assert rec.events[-1][0] == "rejected" and rec.events[-1][3] == code
    assert engine.received() == 0
    np.testing.assert_array_equal(engine.global_weights["w"], before["w"])


def test_not_selected_duplicate_and_closed_round():
    engine, _ = make_engine(fraction=0.5)
    task = engine.open_round()
    outsider = next(c for c in engine.clients if c not in task.selected)
    with pytest.raises(RejectedUpdateError, match="was not selected") as info:
        engine.submit(upd(outsider, 1, 1.0))
    assert info.value.code == "not_selected"
    engine.submit(upd(task.selected[0], 1, 1.0))
    with pytest.raises(RejectedUpdateError, match="already sent") as info:
        engine.submit(upd(task.selected[0], 1, 9.0))
    assert info.value.code == "duplicate"
    engine.submit(upd(task.selected[1], 1, 1.0))
    outcome = engine.close_round()
    np.testing.assert_array_equal(outcome.weights["w"], 1.0)  # the duplicate's 9.0 never entered
    assert outcome.num_rejected == 2
    with pytest.raises(RejectedUpdateError) as info:
        engine.submit(upd(task.selected[0], 1, 1.0))  # replay of the closed round
    assert info.value.code == "round_closed"


def test_criteria_threshold_and_min_updates():
    engine, _ = make_engine(criteria=RoundCriteria(threshold=0.5, min_updates=1))
    task = engine.open_round()
    engine.submit(upd(task.selected[0], 1, 2.0))
    assert not engine.criteria_met()
    with pytest.raises(EngineStateError, match="has 1 of the 2 updates"):
        engine.close_round()
    engine.submit(upd(task.selected[1], 1, 4.0))
    assert engine.criteria_met() and not engine.all_received()
    outcome = engine.close_round()
    assert outcome.missing == task.selected[2:]
    assert RoundCriteria(threshold=0.1, min_updates=3).required(10) == 3
    assert RoundCriteria(threshold=1.0, min_updates=3).required(2) == 2


def test_state_machine_guards_and_finish():
    engine, _ = make_engine(max_rounds=1)
    with pytest.raises(EngineStateError, match="cannot close a round while the engine is idle"):
        engine.close_round()
    task = engine.open_round()
    with pytest.raises(EngineStateError, match="cannot open a round while the engine is collecting"):
        engine.open_round()
    for cid in task.selected:
        engine.submit(upd(cid, 1, 1.0))
    engine.close_round()
    assert engine.state is EngineState.FINISHED
    with pytest.raises(EngineStateError):
        engine.open_round()


def test_global_model_handed_to_clients_is_read_only():
    engine, _ = make_engine()
    task = engine.open_round()
    with pytest.raises(ValueError, match="read-only"):
        task.global_weights["w"][0] = 1.0
    copy = engine.global_weights
    copy["w"][0] = 5.0  # a copy is writable and does not affect the engine
    assert engine.global_weights["w"][0] == 0.0


def test_fit_config_is_per_client_and_reproducible():
    engine, _ = make_engine()
    engine.open_round()
    a, b = engine.fit_config("c0"), engine.fit_config("c1")
    assert a.round == 1 and a.seed != b.seed and engine.fit_config("c0") == a
