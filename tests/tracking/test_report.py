"""The RoundReport of a round: system rows (scope "system", which the store may not hold yet)
summed into bytes, the client-series bound, and refusals counted per code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fedloom.core.records import MetricRecord, ModelRecord, RejectionRecord, RoundRecord
from fedloom.tracking import MAX_CLIENT_SERIES, read_round_report

OPENED = datetime(2026, 1, 1, tzinfo=UTC)


class RowsStore:
    """The four reads the report makes, over fixed rows."""

    def __init__(self, clients: int, system: list[tuple[str, str, float]]) -> None:
        ids = [f"site-{i}" for i in range(clients)]
        self.round = RoundRecord(
            "r", 2, "closed", tuple(ids), OPENED, OPENED + timedelta(seconds=2.5), clients, 7 * clients
        )
        self.local = [
            ModelRecord(i, "r", 2, 7, "0" * 64, None, OPENED, c, {"train_loss": 0.5 + i}) for i, c in enumerate(ids)
        ]
        self.rows = [MetricRecord("r", 2, "server", "accuracy", 0.875, OPENED)]
        self.rows += [MetricRecord("r", 2, "system", n, v, OPENED, client_id=who) for who, n, v in system]
        self.refusals = [
            RejectionRecord(5, "r", 2, "site-0", "non_finite", "NaN", OPENED),
            RejectionRecord(6, "r", 1, "site-1", "wrong_round", "late", OPENED),
            RejectionRecord(7, "r", 2, "x", "non_finite", "Inf", OPENED),
        ]

    def get_round(self, run_id, round):
        return self.round

    def list_local_models(self, run_id, round):
        return self.local

    def round_metrics(self, run_id, round):
        return self.rows

    def rejections_after(self, run_id, after_id):
        return [r for r in self.refusals if r.id > after_id]


def test_system_rows_bytes_timing_and_refusals():
    system = [("site-0", "bytes_up", 2.0**40), ("site-1", "bytes_up", 1e-3), ("aggregator", "bytes_down", 5e9),
              ("aggregator", "cpu_percent", 12.5), ("site-0", "memory_rss_bytes", 2.0**31)]  # fmt: skip
    report = read_round_report(RowsStore(2, system), "r", 2, rejections_after=5)
    scalars = report.scalars()
    assert scalars["bytes/up"] == 2.0**40 + 1e-3 and scalars["bytes/down"] == 5e9
    assert scalars["system/aggregator/cpu_percent"] == 12.5 and scalars["system/site-0/memory_rss_bytes"] == 2.0**31
    assert scalars["timing/wall_seconds"] == 2.5 and scalars["server/accuracy"] == 0.875
    assert scalars["client/site-1/train_loss"] == 1.5
    assert scalars["participation/num_samples"] == 14 and scalars["participation/contributed"] == 2
    # refusal 5 was reported before: the late one for round 1 and the new one for round 2 count now
    assert scalars["rejections/total"] == 2 and scalars["rejections/wrong_round"] == 1
    assert scalars["rejections/non_finite"] == 1


def test_no_system_rows_no_bytes_and_no_client_series_past_the_bound():
    report = read_round_report(RowsStore(MAX_CLIENT_SERIES + 1, []), "r", 2)
    scalars = report.scalars()
    assert "bytes/up" not in scalars and not any(k.startswith("system/") for k in scalars)
    assert not any(k.startswith("client/") for k in scalars)
    assert scalars["participation/contributed"] == MAX_CLIENT_SERIES + 1
    assert read_round_report(RowsStore(MAX_CLIENT_SERIES, []), "r", 2).scalars()["client/site-99/train_loss"] == 99.5
