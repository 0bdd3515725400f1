"""The dashboard's JSON documents, built from store reads: one function per page section.

Kept apart from the HTTP routes so each shape is a plain function of records and can
be read (and tested) without a server. Every list here is bounded by the caller's
limits, and each document says when it was cut (``truncated`` and the full count).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fedloom.core.records import MetricRecord, RoundRecord, RunRecord

#: a server metric whose name starts with this is measured on the clients' training data
TRAIN_PREFIX = "train_"


def when(moment: datetime | None) -> str | None:
    """A timestamp as ISO 8601 (UTC), or None."""
    return None if moment is None else moment.isoformat()


def number(value: float) -> float | None:
    """A metric value JSON can carry: NaN and infinities become null."""
    return value if math.isfinite(value) else None


def planned_rounds(config: Mapping[str, Any]) -> int | None:
    """The rounds a run was configured for: ``rounds`` (simulation) or ``[rounds] max_rounds`` (deployment)."""
    rounds = config.get("rounds")
    if isinstance(rounds, Mapping):
        rounds = rounds.get("max_rounds")
    return rounds if isinstance(rounds, int) and not isinstance(rounds, bool) else None


def run_summary(run: RunRecord, done: int, best: float | None) -> dict[str, Any]:
    """One row of the runs list."""
    return {
        "id": run.id,
        "short_id": run.short_id,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "rounds_done": done,
        "rounds_planned": planned_rounds(run.config),
        "best_accuracy": None if best is None else number(best),
        "created_at": when(run.created_at),
        "finished_at": when(run.finished_at),
    }


def run_detail(run: RunRecord, done: int, best: float | None) -> dict[str, Any]:
    """A run's summary with its configuration and final summary."""
    return {**run_summary(run, done, best), "seed": run.seed, "config": run.config, "summary": run.summary}


def series(rounds: Sequence[RoundRecord], metrics: Iterable[MetricRecord]) -> dict[str, Any]:
    """Per round: the server metrics split into training (``train_*``) and evaluation, counts and seconds.

    Only metrics of the given rounds are kept, so a cut series carries no values of rounds it does not list."""
    shown = {r.round for r in rounds}
    values: dict[int, dict[str, float | None]] = defaultdict(dict)
    for m in metrics:
        if m.round in shown:
            values[m.round][m.name] = number(m.value)
    points = []
    for r in rounds:
        measured = values.get(r.round, {})
        seconds = None if r.closed_at is None else (r.closed_at - r.opened_at).total_seconds()
        points.append(
            {
                "round": r.round,
                "status": r.status,
                "num_updates": r.num_updates,
                "num_samples": r.num_samples,
                "seconds": seconds,
                "train": {k: v for k, v in measured.items() if k.startswith(TRAIN_PREFIX)},
                "eval": {k: v for k, v in measured.items() if not k.startswith(TRAIN_PREFIX)},
            }
        )
    names = sorted({k for m in values.values() for k in m})
    return {"rounds": points, "metric_names": names}


def participation(
    rounds: Sequence[RoundRecord],
    clients: Sequence[str],
    total_clients: int,
    contributed: set[tuple[int, str]],
    refused: set[tuple[int, str]],
) -> dict[str, Any]:
    """The client x round matrix: ``c`` contributed, ``r`` refused, ``s`` selected only, ``.`` not selected."""
    shown = set(clients)
    selected = {(r.round, c) for r in rounds for c in r.selected if c in shown}
    matrix = []
    for client in clients:
        row = []
        for r in rounds:
            key = (r.round, client)
            row.append("c" if key in contributed else "r" if key in refused else "s" if key in selected else ".")
        matrix.append("".join(row))
    return {
        "rounds": [r.round for r in rounds],
        "clients": list(clients),
        "cells": matrix,
        "legend": {"c": "contributed", "r": "refused", "s": "selected, no update", ".": "not selected"},
        "total_clients": total_clients,
        "truncated": total_clients > len(clients),
    }


def metric_rows(records: Iterable[MetricRecord], total: int, limit: int, offset: int) -> dict[str, Any]:
    """A page of metric rows (client or system scope), with the paging that produced it (``truncated``:
    other rows exist besides this page)."""
    rows = [{"round": m.round, "client_id": m.client_id, "name": m.name, "value": number(m.value)} for m in records]
    return {"rows": rows, "total": total, "limit": limit, "offset": offset, "truncated": len(rows) < total}
