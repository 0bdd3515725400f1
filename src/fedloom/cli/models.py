"""``fedloom models``: list a run's stored models and export one as a safetensors file.

``models list [RUN]`` prints the global models of a run (default: the newest run): the
round, the samples aggregated, the content hash, when it was stored and the size of its
blob, with the number of local models (accepted updates) recorded in each round.
``models export --round N --out FILE`` writes a round's global model (or, with
``--local AGENT``, one agent's update) as a safetensors file: the store's own payload
(``fedloom.core.to_bytes`` of the verified weights, with the fedloom metadata header),
written atomically.

Global model rows follow the store's convention: round 0 is the initial model and round
``r`` the model that round ``r`` produced (the one that starts round ``r + 1``).

The database is the SQLite store under ``--home`` / ``$FEDLOOM_HOME`` / ``./fedloom-runs``,
or any SQLAlchemy database given with ``--db-url`` (as ``fedloom token``). Model bytes
live in the ``blobs/`` directory of a home directory: ``--home``, else (with ``--db-url``)
the home the aggregator recorded in the run's config, so a PostgreSQL store needs no
``--home``.
``models verify [RUN]`` recomputes the run's lineage chain (:mod:`fedloom.cli.models_verify`).
Every action only reads: none creates a SQLite store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedloom.cli.models_verify import print_lineage
from fedloom.cli.output import dumps, fmt_time, print_help, table
from fedloom.core.errors import StoreError
from fedloom.core.reserved import model_part
from fedloom.core.serialization import to_bytes
from fedloom.store import FileBlobStore, ModelRecord, RunRecord, SqlStore, resolve_home
from fedloom.store.blob_urls import blob_store_from_url
from fedloom.store.sql import BLOBS_DIRNAME, DB_FILENAME, HOME_ENV, sqlite_url

#: characters of the content hash shown in the table (``--json`` has all 64)
SHORT_SHA = 12


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models list``, ``models export`` and ``models verify`` to the ``fedloom`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        help=f"store directory: blobs, and the SQLite database unless --db-url (default: ${HOME_ENV}, ./fedloom-runs)",
    )
    common.add_argument(
        "--db-url", metavar="URL", help="the database as a SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db"
    )
    common.add_argument(
        "--blob-url",
        metavar="URL",
        help="where the blobs are: s3://bucket/prefix (endpoint from $FEDLOOM_S3_ENDPOINT) or a directory "
        "(default: the run's recorded [server] blob_url, else HOME/blobs)",
    )
    parser = subparsers.add_parser(
        "models",
        help="list and export a run's stored models",
        description="List the global models of a run, or export one (or an agent's update) as a safetensors file.",
    )
    parser.set_defaults(func=lambda _args: print_help(parser))
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="a run's global models, with local models per round")
    listing.add_argument("run", metavar="RUN", nargs="?", help="run id, unique id prefix or run name (default: newest)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=run_list)

    export = actions.add_parser("export", parents=[common], help="write one stored model as a safetensors file")
    export.add_argument("--round", type=int, required=True, metavar="N", help="the round (0 = the initial model)")
    export.add_argument("--run", metavar="RUN", help="run id, unique id prefix or run name (default: newest)")
    export.add_argument("--out", required=True, metavar="FILE", help="where to write, e.g. model.safetensors")
    export.add_argument("--local", metavar="AGENT", help="export this agent's update of the round (id or agent name)")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(func=run_export)

    verify = actions.add_parser(
        "verify", parents=[common], help="recompute a run's lineage chain from its rows and blobs"
    )
    verify.add_argument("run", metavar="RUN", nargs="?", help="run id, unique id prefix or run name (default: newest)")
    verify.add_argument("--json", action="store_true", help="print JSON instead of text")
    verify.set_defaults(func=run_verify)


# --------------------------------------------------------------------- opening


@contextmanager
def _open_store(args: argparse.Namespace) -> Iterator[SqlStore]:
    """The store of ``--db-url`` / ``--home`` with the home's blobs; a missing SQLite store is an error."""
    home = resolve_home(args.home)
    blobs = home / BLOBS_DIRNAME
    chosen = blob_store_from_url(args.blob_url) if getattr(args, "blob_url", None) else None
    if args.db_url:
        store = SqlStore(args.db_url, blob_root=blobs if chosen is None and blobs.is_dir() else None, blobs=chosen)
    else:
        if not (home / DB_FILENAME).is_file():
            raise StoreError(f"no store in {_shown(home)}: pass --home DIR (or --db-url URL) to point at one")
        store = SqlStore(sqlite_url(home / DB_FILENAME), blob_root=None if chosen else blobs, blobs=chosen)
        store.home = home
    try:
        yield store
    finally:
        store.close()


def _home_of(args: argparse.Namespace, run: RunRecord) -> Path:
    """Where the run's blobs live: ``--home``, else the home the aggregator recorded in the run's
    config (a PostgreSQL store does not say where its filesystem blobs are), else the default."""
    if args.home is None and args.db_url:
        recorded = (run.config.get("server") or {}).get("home") if isinstance(run.config, dict) else None
        if isinstance(recorded, str) and recorded:
            return Path(recorded)
    return resolve_home(args.home)


@contextmanager
def _run_store(args: argparse.Namespace) -> Iterator[tuple[SqlStore, RunRecord]]:
    """The store and the run ``args.run``, with the blobs of that run's home."""
    with _open_store(args) as store:
        run = _find_run(store, args.run)
        recorded = _recorded_blob_url(args, run)
        home = _home_of(args, run)
        if recorded is not None:
            url = args.db_url or sqlite_url(resolve_home(args.home) / DB_FILENAME)
            with SqlStore(url, blobs=blob_store_from_url(recorded)) as located:
                yield located, run
            return
        if not args.db_url or home == resolve_home(args.home):
            yield store, run
            return
    with SqlStore(args.db_url, blob_root=home / BLOBS_DIRNAME) as located:
        yield located, run


def _recorded_blob_url(args: argparse.Namespace, run: RunRecord) -> str | None:
    """The run's ``[server] blob_url`` (an S3 store, say) when no ``--blob-url`` overrides it."""
    if getattr(args, "blob_url", None):
        return None
    server = run.config.get("server") if isinstance(run.config, dict) else None
    recorded = server.get("blob_url") if isinstance(server, dict) else None
    return recorded if isinstance(recorded, str) and recorded else None


def _shown(path: Path) -> str:
    return str(path if path.is_absolute() else Path.cwd() / path)


def _find_run(store: SqlStore, ref: str | None) -> RunRecord:
    """The run named by id, unique id prefix or name; the newest run when ``ref`` is None."""
    if ref is None:
        newest = store.list_runs(limit=1)
        if not newest:
            raise StoreError("the store holds no runs yet (see `fedloom runs list`)")
        return newest[0]
    try:
        return store.get_run(ref)
    except StoreError as by_id:
        named = [run for kind in ("deployment", "simulation") if (run := store.find_run(ref, kind)) is not None]
        if not named:
            raise StoreError(f"{by_id}; no run is named {ref!r} either") from None
        return max(named, key=lambda run: (run.created_at, run.id))


def _blob_size(home: Path, record: ModelRecord) -> int | None:
    """The stored payload's size in bytes, or None when the blob was not kept or is not here."""
    if record.blob_key is None:
        return None
    try:
        path = FileBlobStore(home / BLOBS_DIRNAME).path_for(record.blob_key)
        return path.stat().st_size
    except (OSError, StoreError, ValueError):
        return None


# --------------------------------------------------------------------- models list


def run_list(args: argparse.Namespace) -> int:
    """Print a run's global models as a table (or JSON)."""
    with _open_store(args) as store:
        run = _find_run(store, args.run)
        home = _home_of(args, run)
        globals_ = store.list_global_models(run.id)
        locals_ = Counter(record.round for record in store.list_local_models(run.id))
    entries: list[dict[str, Any]] = [
        {
            "round": record.round,
            "num_samples": record.num_samples,
            "sha256": record.sha256,
            "created_at": record.created_at,
            "size_bytes": _blob_size(home, record),
            "local_models": locals_.get(record.round, 0),
        }
        for record in globals_
    ]
    details = {
        "run": {"id": run.id, "name": run.name, "kind": run.kind, "status": run.status},
        "global_models": entries,
        "local_models_per_round": {str(k): locals_[k] for k in sorted(locals_)},
    }
    if args.json:
        print(dumps(details))
        return 0
    print(f"run {run.id} ({run.name}, {run.kind}, {run.status})")
    if not entries:
        print("no global models stored yet")
    else:
        headers = ["ROUND", "SAMPLES", "SHA256", "CREATED", "SIZE", "LOCAL_MODELS"]
        rows = [
            [
                str(e["round"]),
                str(e["num_samples"]),
                e["sha256"][:SHORT_SHA],
                fmt_time(e["created_at"]),
                _fmt_size(e["size_bytes"]),
                str(e["local_models"]),
            ]
            for e in entries
        ]
        print(table(headers, rows))
        print("round 0 is the initial model; round r is the model round r produced (it starts round r + 1)")
    without_global = sorted(set(locals_) - {record.round for record in globals_})
    for number in without_global:
        print(f"round {number}: {locals_[number]} local model(s), no global model (round open or abandoned)")
    return 0


# --------------------------------------------------------------------- models verify


def run_verify(args: argparse.Namespace) -> int:
    """Check the run's lineage chain; exit status 1 names the first record that does not match."""
    with _run_store(args) as (store, run):
        report = store.verify_lineage(run.id)
    return print_lineage(report, f"{run.short_id} ({run.name})", args.json)


# --------------------------------------------------------------------- models export


def run_export(args: argparse.Namespace) -> int:
    """Write one stored model to ``--out`` atomically and print how to load it."""
    out = Path(args.out)
    if out.is_dir():
        raise StoreError(f"--out {str(out)!r} is a directory: give a file name such as model.safetensors")
    if out.exists() and not args.force:
        raise StoreError(f"{str(out)!r} already exists (pass --force to replace it)")
    with _run_store(args) as (store, run):
        if args.local is None:
            record = _global_record(store, run, args.round)
            weights = model_part(store.load_global_model(run.id, record.round))  # no fedloom.* state tensors
            payload = to_bytes(weights, round=record.round, num_samples=record.num_samples)
            what = f"global model of round {record.round}"
        else:
            record = _local_record(store, run, args.round, args.local)
            assert record.client_id is not None
            weights = model_part(store.load_local_model(run.id, record.round, record.client_id))
            payload = to_bytes(weights, round=record.round, client_id=record.client_id, num_samples=record.num_samples)
            what = f"local model of {record.client_id} in round {record.round}"
    _write_atomically(out, payload)
    print(f"Wrote the {what} of run {run.short_id} ({run.name}) to {out}")
    size = _fmt_size(len(payload))
    print(f"  {len(weights)} tensor(s), {size}, {record.num_samples} samples, sha256 {record.sha256}")
    print()
    print("It is a plain safetensors file (no pickle). Load it in PyTorch with:")
    print()
    print("    from safetensors.torch import load_file")
    print(f"    model.load_state_dict(load_file({str(out)!r}))")
    print()
    print("or with NumPy: safetensors.numpy.load_file(path). Its header metadata holds format=fedloom/1,")
    print("the round, client_id, num_samples and sha256; fedloom.core.from_bytes checks that hash.")
    return 0


def _global_record(store: SqlStore, run: RunRecord, round: int) -> ModelRecord:
    records = store.list_global_models(run.id)
    for record in records:
        if record.round == round:
            return record
    available = ", ".join(str(r.round) for r in records) or "none yet"
    raise StoreError(f"run {run.short_id} ({run.name}) has no global model for round {round}; rounds: {available}")


def _local_record(store: SqlStore, run: RunRecord, round: int, agent: str) -> ModelRecord:
    """The local model of ``agent`` (a client id, or a deployed agent's name) in ``round``."""
    names = {a.name: a.id for a in store.list_agents(run.id)}
    client_id = names.get(agent, agent)
    records = store.list_local_models(run.id)
    for record in records:
        if record.round == round and record.client_id in (agent, client_id):
            return record
    in_round = [r.client_id or "" for r in records if r.round == round]
    if in_round:
        by_id = {v: k for k, v in names.items()}
        shown = ", ".join(f"{c} ({by_id[c]})" if c in by_id else c for c in in_round)
        raise StoreError(f"run {run.short_id} has no local model of {agent!r} in round {round}; it has: {shown}")
    rounds = sorted({r.round for r in records})
    available = ", ".join(map(str, rounds)) or "none"
    raise StoreError(f"run {run.short_id} has no local models in round {round}; rounds with local models: {available}")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: readers never see half a file."""
    directory = path.parent if str(path.parent) else Path()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot write {str(path)!r}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise StoreError(f"cannot write {str(path)!r}: {exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --------------------------------------------------------------------- formatting


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "-"
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
