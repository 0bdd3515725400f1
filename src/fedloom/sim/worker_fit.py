"""What a simulation worker does with the clients it is handed, and how the driver reads it back.

The process-pool executor (:mod:`fedloom.sim.parallel`) and the Ray executor
(:mod:`fedloom.sim.ray_executor`) share this code, so both check, pre-merge and report a
client exactly alike and the driver turns their messages into results the same way.

A worker holds the round's global model. Each client is trained with
:func:`~fedloom.sim.executor.fit_one` (the same seeds and checks as the sequential
executor) and checked against the global model; for mergeable (sum-type) aggregators it
is folded into the worker's :class:`WeightedMeanAccumulator` and only its report leaves,
else its weights are sent. At the end of the round the worker ships one partial sum.

With cohort training on (``cohort`` ``"auto"`` or N, issue 13) the driver hands a worker
its share of the round in one ``fit_cohort`` message; the worker trains it through the
sequential executor's :class:`~fedloom.sim.cohort.runner.CohortRound` (same admission,
probe, fallback and failure rules) and answers one message per client, exactly the
messages ``fit`` would have sent for them one by one.

Messages are a JSON-able header and a fedloom safetensors payload: nothing is pickled.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.core.errors import ValidationError
from fedloom.core.fit import FitConfig
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.core.update import ClientUpdate, UpdateReport
from fedloom.core.weights import Weights, validate_weights
from fedloom.sim.executor import ClientFailure, ClientFn, fit_one

#: one message: a JSON-able header and a safetensors payload (empty when there are no tensors)
Message = tuple[dict[str, Any], bytes]


def limit_threads(threads: int) -> None:
    """Stop each worker from spawning a thread per core (N workers x N threads oversubscribes)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # numpy's BLAS keeps its default; only matters for BLAS-heavy trainers
        pass


def fit_header(client_id: str, config: FitConfig, state_dir: str | None) -> dict[str, Any]:
    """The header asking a worker to train ``client_id`` with ``config`` (the state folder beside it)."""
    fields = asdict(config)
    fields["extra"] = dict(fields["extra"])
    return {"type": "fit", "client_id": client_id, "config": fields, "state_dir": state_dir}


def cohort_header(round: int, configs: Mapping[str, FitConfig], state_dir: str | None) -> dict[str, Any]:
    """The header asking a worker to train the clients of ``configs`` (its share of the round) as cohorts."""
    clients = [fit_header(client_id, config, state_dir) for client_id, config in configs.items()]
    return {"type": "fit_cohort", "round": round, "clients": clients, "state_dir": state_dir}


def worker_failure(client_id: str, round: int, exc: BaseException) -> ClientFailure:
    """How a worker reports a client that raised: invalid weights by their own message and code,
    anything else (the user's Trainer may raise anything) with its type and traceback."""
    if isinstance(exc, ValidationError):
        return ClientFailure(client_id, round, str(exc), "", "invalid_weights")
    return ClientFailure(client_id, round, f"{type(exc).__name__}: {exc}", traceback.format_exc())


def failure_message(failure: ClientFailure) -> Message:
    """The ``failure`` message the driver turns back into ``failure`` (see :func:`result_from`)."""
    fields = {"client_id": failure.client_id, "message": failure.message, "details": failure.details}
    return {"type": "failure", **fields, "code": failure.code}, b""


@dataclass
class WorkerState:
    """The round a worker is in: the global model and, for mergeable rounds, its partial sum;
    ``cohort`` is the executor's cohort setting for ``fit_cohort`` shares."""

    weights: Weights | None = None
    accumulator: WeightedMeanAccumulator | None = None
    cohort: str | int = "off"

    def begin_round(self, payload: bytes, merge: bool) -> None:
        """Take the round's global model (one safetensors payload) and start an empty partial sum."""
        self.weights, _ = from_bytes(payload)
        self.accumulator = WeightedMeanAccumulator(self.weights) if merge else None

    def fit(self, client_fn: ClientFn, header: dict[str, Any]) -> Message:
        """Train one client; a failure is a message too (the worker goes on)."""
        client_id = header["client_id"]
        assert self.weights is not None, "fit before begin_round"
        try:
            config = FitConfig(**header["config"])
            update = fit_one(client_fn, client_id, self.weights, config, header.get("state_dir"))
        except Exception as exc:  # the user's Trainer may raise anything: reported, the worker goes on
            return failure_message(worker_failure(client_id, 0, exc))
        return self._answer(update)

    def fit_cohort(self, client_fn: ClientFn, header: dict[str, Any]) -> Iterator[Message]:
        """Train a share of the round as cohorts; one message per client, as ``fit`` would send."""
        from fedloom.sim.cohort.runner import CohortRound  # imports torch: only where cohorts train

        assert self.weights is not None, "fit_cohort before begin_round"
        round, configs = int(header["round"]), dict[str, FitConfig]()
        for entry in header["clients"]:
            try:
                configs[entry["client_id"]] = FitConfig(**entry["config"])
            except Exception as exc:  # a config this worker cannot read fails that client alone
                yield failure_message(worker_failure(entry["client_id"], round, exc))
        share = CohortRound(round, self.weights, configs, header.get("state_dir"), self.cohort, worker_failure)
        for outcome in share.run(client_fn):
            yield failure_message(outcome) if isinstance(outcome, ClientFailure) else self._answer(outcome)

    def _answer(self, update: ClientUpdate) -> Message:
        """A trained client checked against the global model, then folded (its report) or sent."""
        assert self.weights is not None
        try:
            validate_weights(update.weights, self.weights)
        except ValidationError as exc:
            return failure_message(worker_failure(update.client_id, update.round, exc))
        report = asdict(update.report())
        if self.accumulator is not None:
            self.accumulator.add(update)
            return {"type": "fitted", "report": report}, b""
        return {"type": "update", "report": report}, to_bytes(update.weights)

    def flush(self) -> Message:
        """The partial sum of the clients folded in since the last flush (then an empty one starts)."""
        assert self.accumulator is not None and self.weights is not None, "flush outside a merged round"
        sums, total, count = self.accumulator.partial_sums()
        self.accumulator = WeightedMeanAccumulator(self.weights)
        return {"type": "partial", "total": total, "count": count}, to_bytes(sums) if count else b""


def partial_from(reference: Weights, message: Message) -> WeightedMeanAccumulator:
    """The accumulator a ``partial`` message describes, checked against the round's model."""
    header, payload = message
    if not header["count"]:
        return WeightedMeanAccumulator(reference)
    sums, _ = from_bytes(payload)
    return WeightedMeanAccumulator.from_partial_sums(reference, sums, header["total"], header["count"])


def merge_partials(reference: Weights, messages: Iterable[Message]) -> Message:
    """Several workers' partial sums folded into one ``partial`` message, in the order given
    (how the Ray executor sends one partial per node instead of one per worker)."""
    merged = WeightedMeanAccumulator(reference)
    for message in messages:
        merged.merge(partial_from(reference, message))
    sums, total, count = merged.partial_sums()
    return {"type": "partial", "total": total, "count": count}, to_bytes(sums) if count else b""


def result_from(round: int, message: Message) -> ClientUpdate | ClientFailure | UpdateReport:
    """What a worker's answer to ``fit`` means: an update, a failure, or the report of a folded client."""
    header, payload = message
    kind = header["type"]
    if kind == "failure":
        details, code = header.get("details", ""), header.get("code", "client_failed")
        return ClientFailure(header["client_id"], round, header["message"], details, code)
    report = UpdateReport(**header["report"])
    if kind == "fitted":
        return report
    tensors, _ = from_bytes(payload)
    return ClientUpdate(report.client_id, report.round, tensors, report.num_samples, report.metrics)
