"""A process-pool executor: one forked worker per core, pre-merging its clients' updates.

Why it is shaped this way:

- Workers are *forked* from the driver, so they inherit the dataset and ``client_fn``
  copy-on-write: the data is loaded once and shared, nothing is pickled, and a client
  that is not training costs only its partition indices.
- The global model goes to each worker once per round (one safetensors payload), not
  once per client.
- For mergeable (sum-type) aggregators every worker folds its clients into one partial
  weighted sum and sends it at the end of the round: traffic is O(workers x model),
  not O(clients x model). Other aggregators receive every update.
- Clients are handed out one at a time to whichever worker is free, so uneven client
  sizes do not leave a core idle. With ``cohort`` ``"auto"`` or N (issue 13) a worker is
  handed a *share* of the round instead (``ceil(clients / workers)`` clients, at most N)
  and trains it as batched cohorts (fedloom.sim.cohort, where the model is safe for it),
  answering per client exactly as it would one by one; ``"off"`` (the default) is the
  one-at-a-time path, unchanged. A round whose first client would train one by one anyway
  (a model vmap refuses, ``auto``'s CPU rule for large models) is handed out one client
  at a time too, which keeps uneven clients balanced across the workers.
- A worker that dies (segfault, OOM kill) is noticed at once through its socket; it is
  replaced, the clients it had merged are re-run, and the client it was training is
  retried up to ``max_retries`` times, then reported as a failure with what is known.
  A Python exception in a Trainer is reported with its traceback and the worker goes on.
  A worker that dies (or exceeds ``client_timeout`` x its share's size) in a cohort share
  cannot say which client killed it: the share's unanswered clients are re-queued one by
  one, so the culprit is found, retried and reported exactly as above (nobody is charged
  an attempt for the share).

Requires the ``fork`` start method (Linux; macOS works but is not the supported path).
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import os
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.serialization import to_bytes
from fedloom.core.update import ClientUpdate, UpdateReport
from fedloom.core.weights import Weights
from fedloom.sim.cohort.setting import parse_cohort
from fedloom.sim.executor import ClientFailure, ClientFn, MergedUpdates
from fedloom.sim.wire import WorkerGone, recv_frame, send_frame
from fedloom.sim.worker_fit import WorkerState, cohort_header, fit_header, limit_threads, partial_from, result_from


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def plan_shares(client_ids: list[str], workers: int, cohort: str | int) -> list[list[str]]:
    """The round's clients cut into what one worker is handed at a time, in the round's order:
    one client each with ``cohort="off"``; else ``ceil(clients / workers)`` (at most N) so
    that every worker trains one large cohort and none is left idle."""
    if cohort == "off" or not client_ids:
        return [[client_id] for client_id in client_ids]
    size = math.ceil(len(client_ids) / workers)
    size = min(size, cohort) if isinstance(cohort, int) else size
    return [client_ids[i : i + size] for i in range(0, len(client_ids), size)]


# ----------------------------------------------------------------------------- worker side


def _worker_loop(sock: socket.socket, client_fn: ClientFn, threads: int, cohort: str | int) -> None:
    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    state = WorkerState(cohort=cohort)
    with contextlib.suppress(WorkerGone):  # the driver is gone (exited or killed): nothing left to do
        while True:
            header, payload = recv_frame(sock)
            kind = header["type"]
            if kind == "stop":
                return
            if kind == "round":
                state.begin_round(payload, header["merge"])
            elif kind == "fit":
                send_frame(sock, *state.fit(client_fn, header))
            elif kind == "fit_cohort":
                for message in state.fit_cohort(client_fn, header):
                    send_frame(sock, *message)
            elif kind == "flush":
                send_frame(sock, *state.flush())


def _worker_main(
    sock: socket.socket, inherited: list[socket.socket], client_fn: ClientFn, threads: int, cohort: str | int
) -> None:
    for other in inherited:  # close every other worker's fds, or a dead peer would never read as EOF
        other.close()
    try:
        _worker_loop(sock, client_fn, threads, cohort)
    finally:
        sock.close()


# ----------------------------------------------------------------------------- driver side


@dataclass
class _Worker:
    process: Any
    sock: socket.socket
    busy_with: list[str] = field(default_factory=list)  # the clients of its share not answered yet
    busy_since: float = 0.0
    share_size: int = 0  # how many clients it was handed (its timeout is client_timeout x this)
    merged: list[UpdateReport] = field(default_factory=list)


def _death_message(worker: _Worker) -> str:
    worker.process.join(timeout=2)
    code = worker.process.exitcode
    if code is None:
        how = "stopped answering"
    elif code < 0:
        how = f"was killed by signal {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code}"
    if not worker.busy_with:
        return f"worker process {worker.process.pid} {how} between clients"
    if len(worker.busy_with) == 1:
        return f"worker process {worker.process.pid} {how} while training client {worker.busy_with[0]}"
    clients = ", ".join(worker.busy_with)
    return f"worker process {worker.process.pid} {how} while training clients {clients} (a cohort share)"


class ParallelExecutor:
    """Runs clients in ``workers`` forked processes; see the module docstring."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        threads_per_worker: int = 1,
        max_retries: int = 0,
        client_timeout: float | None = None,
        cohort: str | int = "off",
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if client_timeout is not None and client_timeout <= 0:
            raise ConfigError(f"client_timeout must be > 0 seconds, got {client_timeout}")
        self.num_workers = workers or default_workers()
        self.threads_per_worker = threads_per_worker
        self.max_retries = max_retries
        self.client_timeout = client_timeout
        #: each worker trains its share of a round as cohorts: "auto", a size N, or "off" (one at a time)
        self.cohort = parse_cohort(cohort)
        self._workers: list[_Worker] = []
        self._client_fn: ClientFn | None = None
        self._round_open = False  # True while a round runs, and after one abandoned half-way
        self._context = multiprocessing.get_context("fork")

    # -- lifecycle ----------------------------------------------------------------
    def _spawn(self) -> _Worker:
        assert self._client_fn is not None
        parent, child = socket.socketpair()
        inherited = [w.sock for w in self._workers] + [parent]
        process = self._context.Process(
            target=_worker_main,
            args=(child, inherited, self._client_fn, self.threads_per_worker, self.cohort),
            daemon=True,
            name="fedloom-worker",
        )
        gc.freeze()  # objects inherited by the child stay out of its GC scans, so their pages stay shared
        try:
            process.start()
        finally:
            gc.unfreeze()
        child.close()
        return _Worker(process=process, sock=parent)

    def _ensure_workers(self, client_fn: ClientFn) -> None:
        if self._client_fn is not client_fn:
            self.close()
            self._client_fn = client_fn
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def close(self) -> None:
        """Stop every worker (politely, then by force); safe to call twice."""
        for worker in self._workers:
            with contextlib.suppress(WorkerGone, OSError):  # already gone is as good as stopped
                send_frame(worker.sock, {"type": "stop"})
            worker.sock.close()  # a worker blocked sending a result nobody will read gets EPIPE and exits
        deadline = time.monotonic() + 5  # one grace period for the whole pool, not one per worker
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers = []
        self._round_open = False

    def _round_cohort(self, client_fn: ClientFn, configs: Mapping[str, FitConfig]) -> str | int:
        """The cohort setting for this round: ``"off"`` when its first client would train one by
        one anyway (a model vmap refuses, or ``auto``'s CPU rule), so such a model keeps the
        one-client-at-a-time hand-out, which balances uneven clients across the workers."""
        if self.cohort == "off" or not configs:
            return "off"
        from fedloom.sim.cohort.runner import round_takes_cohorts  # imports torch: only when cohorts may train

        first = next(iter(configs))
        return self.cohort if round_takes_cohorts(client_fn, first, configs[first], self.cohort) else "off"

    def __enter__(self) -> ParallelExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a round ------------------------------------------------------------------
    def run_round(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        client_fn: ClientFn,
        merge: bool = False,
        state_dir: str | None = None,
    ) -> Iterator[ClientUpdate | ClientFailure | MergedUpdates]:
        if self._round_open:  # the last round was abandoned: its results still in flight would garble this one
            self.close()
        self._ensure_workers(client_fn)
        run = _RoundRun(self, round, weights, configs, merge, self._round_cohort(client_fn, configs))
        run.state_dir = state_dir
        self._round_open = True
        yield from run.execute()
        self._round_open = False


class _RoundRun:
    """The scheduling state of one round: queue, in-flight clients, retries, partial sums;
    ``cohort`` is the round's setting (``"off"`` when its model trains one by one anyway)."""

    def __init__(
        self,
        owner: ParallelExecutor,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        merge: bool,
        cohort: str | int = "off",
    ) -> None:
        self.owner = owner
        self.round = round
        self.weights = weights
        self.configs = configs
        self.merge = merge
        self.cohort = cohort
        self.round_frame = ({"type": "round", "round": round, "merge": merge}, to_bytes(weights, round=round))
        self.queue: deque[list[str]] = deque(plan_shares(list(configs), owner.num_workers, cohort))
        self.state_dir: str | None = None  # the local context of every fit, sent beside (not in) the config
        self.attempts: dict[str, int] = {}
        self.selector = selectors.DefaultSelector()

    def execute(self) -> Iterator[ClientUpdate | ClientFailure | MergedUpdates]:
        try:
            for worker in list(self.owner._workers):
                self._start_worker(worker)
            while True:
                while self._pending():
                    yield from self._step()
                if not self.merge:
                    break
                yield from self._flush()
                if not self._pending():  # a worker that died while flushing re-queued its clients
                    break
        finally:
            self.selector.close()

    def _pending(self) -> bool:
        """Clients still queued or in training (a replaced worker may already hold a re-queued one)."""
        return bool(self.queue) or any(w.busy_with for w in self.owner._workers)

    def _start_worker(self, worker: _Worker) -> None:
        worker.merged = []
        worker.busy_with = []
        self.selector.register(worker.sock, selectors.EVENT_READ, worker)
        try:
            send_frame(worker.sock, *self.round_frame)
            self._assign(worker)
        except WorkerGone:
            pass  # noticed as EOF by the selector

    def _assign(self, worker: _Worker) -> None:
        if not self.queue:
            worker.busy_with = []
            return
        share = self.queue.popleft()
        worker.busy_with, worker.busy_since, worker.share_size = list(share), time.monotonic(), len(share)
        if len(share) == 1:
            send_frame(worker.sock, fit_header(share[0], self.configs[share[0]], self.state_dir))
        else:
            configs = {client_id: self.configs[client_id] for client_id in share}
            send_frame(worker.sock, cohort_header(self.round, configs, self.state_dir))

    def _step(self) -> Iterator[ClientUpdate | ClientFailure | MergedUpdates]:
        for key, _ in self.selector.select(timeout=1.0):
            worker: _Worker = key.data
            try:
                header, payload = recv_frame(worker.sock)
            except WorkerGone:
                yield from self._replace(worker, _death_message(worker))
                continue
            yield from self._handle(worker, header, payload)
        yield from self._check_timeouts()

    def _handle(
        self, worker: _Worker, header: dict[str, Any], payload: bytes
    ) -> Iterator[ClientUpdate | ClientFailure | MergedUpdates]:
        result = result_from(self.round, (header, payload))
        if isinstance(result, UpdateReport):
            worker.merged.append(result)
        else:
            yield result
        if result.client_id in worker.busy_with:
            worker.busy_with.remove(result.client_id)
        if worker.busy_with:  # the rest of its share is still training
            return
        try:
            self._assign(worker)
        except WorkerGone:
            yield from self._replace(worker, _death_message(worker))

    def _check_timeouts(self) -> Iterator[ClientFailure]:
        limit = self.owner.client_timeout
        if limit is None:
            return
        now = time.monotonic()
        for worker in list(self.owner._workers):
            if worker.busy_with and now - worker.busy_since > limit * worker.share_size:
                worker.process.kill()
                message = f"client {worker.busy_with[0]} exceeded client_timeout={limit}s; its worker was killed"
                yield from self._replace(worker, message)

    def _replace(self, dead: _Worker, message: str) -> Iterator[ClientFailure]:
        """Swap a dead worker for a fresh one; re-queue what it lost; retry or fail its client."""
        self.selector.unregister(dead.sock)
        dead.sock.close()
        if dead.process.is_alive():
            dead.process.kill()
        dead.process.join(timeout=5)
        lost = [r.client_id for r in dead.merged]  # merged work was lost with it
        self.queue.extendleft(reversed(plan_shares(lost, self.owner.num_workers, self.cohort)))
        if len(dead.busy_with) > 1:  # a cohort share: which client killed it is unknown, so each runs alone
            self.queue.extendleft([client_id] for client_id in reversed(dead.busy_with))
        culprit = dead.busy_with[0] if len(dead.busy_with) == 1 else None
        workers = self.owner._workers
        index = workers.index(dead)
        workers[index] = self.owner._spawn()
        if culprit is not None:
            self.attempts[culprit] = self.attempts.get(culprit, 0) + 1
            if self.attempts[culprit] <= self.owner.max_retries:
                self.queue.appendleft([culprit])
            else:
                details = "no Python traceback exists: the process died outside the interpreter's control"
                yield ClientFailure(culprit, self.round, message, details)
        self._start_worker(workers[index])

    def _flush(self) -> Iterator[ClientFailure | MergedUpdates]:
        """Collect each worker's partial sum; a worker that dies here has its clients re-queued."""
        for worker in list(self.owner._workers):
            if not worker.merged:
                continue
            try:
                send_frame(worker.sock, {"type": "flush"})
                header, payload = recv_frame(worker.sock)
            except WorkerGone:
                yield from self._replace(worker, _death_message(worker))
                continue
            yield MergedUpdates(worker.merged, partial_from(self.weights, (header, payload)))
            worker.merged = []
