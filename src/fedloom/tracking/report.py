"""What a tracking sink logs for one round, read back from the store.

Sinks are fed from the store rather than from the running lifecycle, so a simulated and a
deployed run go through the same code and every value a sink shows is the value stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedloom.core.records import RejectionRecord

#: per-client series are logged only when at most this many clients took part in a round:
#: a thousand clients would make thousands of series per round in every tool
MAX_CLIENT_SERIES = 100


@dataclass(frozen=True)
class RoundReport:
    """One round of one run as the store holds it."""

    run_id: str
    round: int
    status: str
    #: the round's "server"-scope metrics (global evaluation, averaged train_* ...)
    server: Mapping[str, float]
    #: client id -> its metrics (its local model's fit metrics, then its "client"-scope values)
    clients: Mapping[str, Mapping[str, float]]
    selected: tuple[str, ...]
    contributed: tuple[str, ...]
    num_samples: int
    #: refusals recorded while the round was open, since the previous report: a late upload for
    #: an earlier round is refused (and counted) in the round it arrived in
    rejections: tuple[RejectionRecord, ...]
    #: seconds between the round's opening and closing rows (None while it is open)
    wall_seconds: float | None
    #: client id (or "aggregator" / "simulation") -> its "system"-scope values; may be empty
    system: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def rejection_counts(self) -> dict[str, int]:
        """How many updates or requests of the round were refused, per reason code."""
        return dict(Counter(r.code for r in self.rejections))

    @property
    def bytes_up(self) -> float:
        """Bytes sent up by every process of the round (0 when no system metrics were recorded)."""
        return sum(values.get("bytes_up", 0.0) for values in self.system.values())

    @property
    def bytes_down(self) -> float:
        return sum(values.get("bytes_down", 0.0) for values in self.system.values())

    def scalars(self) -> dict[str, float]:
        """Every number of the round under the one name each sink logs it as (step = round)."""
        out = {f"server/{name}": value for name, value in self.server.items()}
        if len(self.clients) <= MAX_CLIENT_SERIES:
            for client_id, values in self.clients.items():
                out.update({f"client/{client_id}/{name}": value for name, value in values.items()})
        out["participation/selected"] = float(len(self.selected))
        out["participation/contributed"] = float(len(self.contributed))
        out["participation/num_samples"] = float(self.num_samples)
        out["rejections/total"] = float(len(self.rejections))
        out.update({f"rejections/{code}": float(n) for code, n in self.rejection_counts.items()})
        if self.wall_seconds is not None:
            out["timing/wall_seconds"] = self.wall_seconds
        if "seconds" in self.server:
            out["timing/round_seconds"] = self.server["seconds"]
        if self.system:
            out["bytes/up"] = self.bytes_up
            out["bytes/down"] = self.bytes_down
        for process, values in self.system.items():
            out.update({f"system/{process}/{name}": value for name, value in values.items()})
        return out


def read_round_report(store: Any, run_id: str, round: int, rejections_after: int = 0) -> RoundReport:
    """Build the report of ``round`` from the store's rows, with the refusals recorded after the
    rejection id ``rejections_after`` (an asynchronous version has no round row: it reports
    status ``version``, no selection and no wall time)."""
    row = store.get_round(run_id, round)
    server: dict[str, float] = {}
    clients: dict[str, dict[str, float]] = {}
    system: dict[str, dict[str, float]] = {}
    local = store.list_local_models(run_id, round=round)
    for model in local:
        clients.setdefault(str(model.client_id), {}).update(model.metrics)
    for metric in store.round_metrics(run_id, round):
        if metric.scope == "server":
            server[metric.name] = metric.value
        elif metric.scope == "client":
            clients.setdefault(str(metric.client_id), {})[metric.name] = metric.value
        else:
            system.setdefault(str(metric.client_id or metric.scope), {})[metric.name] = metric.value
    closed = row is not None and row.closed_at is not None
    wall = (row.closed_at - row.opened_at).total_seconds() if closed else None
    return RoundReport(
        run_id=run_id,
        round=round,
        status=row.status if row is not None else "version",
        server=server,
        clients=clients,
        selected=tuple(row.selected) if row is not None else (),
        contributed=tuple(str(m.client_id) for m in local),
        num_samples=int(row.num_samples) if row is not None else sum(m.num_samples for m in local),
        rejections=tuple(store.rejections_after(run_id, rejections_after)),
        wall_seconds=wall,
        system=system,
    )


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The run config as ``a.b.c -> text`` pairs, what every tool takes as parameters."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out
