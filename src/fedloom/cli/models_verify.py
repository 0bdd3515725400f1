"""``fedloom models verify RUN``: recompute a run's lineage chain and name the first record that differs.

Kept apart from :mod:`fedloom.cli.models` (which registers the action and opens the store)
so that module stays one concept per screen. Prints ``OK`` with the number of links and
blobs checked, or the first mismatch (round, table, what differs) and exits 1; global models
recorded before schema version 6 carry no link and are named as unchained, not failed.
"""

from __future__ import annotations

import sys

from fedloom.cli.output import dumps
from fedloom.store.lineage import LineageReport

#: exit status when the chain does not match the stored rows and blobs
MISMATCH_EXIT = 1


def print_lineage(report: LineageReport, run_label: str, as_json: bool) -> int:
    """Print the report of ``verify_lineage``; returns 0 when it matches, :data:`MISMATCH_EXIT` otherwise."""
    if as_json:
        mismatch = report.mismatch
        shown = (
            None if mismatch is None else {"round": mismatch.round, "table": mismatch.table, "detail": mismatch.detail}
        )
        details = {
            "run": report.run_id,
            "ok": report.ok,
            "links_checked": report.checked,
            "blobs_checked": report.blobs_checked,
            "unchained_rounds": list(report.unchained),
            "last_link": report.last_link,
            "mismatch": shown,
        }
        print(dumps(details))
        return 0 if report.ok else MISMATCH_EXIT
    if report.unchained:
        rounds = ", ".join(map(str, report.unchained))
        print(f"unchained (recorded before lineage): global model round(s) {rounds}")
    if report.mismatch is not None:
        print(f"MISMATCH in run {run_label} after {report.checked} matching link(s): {report.mismatch}")
        print(f"fedloom: lineage of run {report.run_id} does not verify", file=sys.stderr)
        return MISMATCH_EXIT
    print(f"OK: run {run_label}: {report.checked} lineage link(s) and {report.blobs_checked} blob(s) match")
    if report.last_link is not None:
        print(f"last link {report.last_link} (keep it outside the store to detect a rewritten history)")
    return 0
