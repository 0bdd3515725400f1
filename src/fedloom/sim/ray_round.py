"""One round on the Ray executor's actors: handing out clients, pre-merging per node, retrying the lost.

- The round's global model is put in the object store once; every actor is told to take
  it, so each node fetches it once.
- Clients are handed out in the order the round lists them (the sequential executor's
  order), each actor holding at most two (one training, one queued next, so it never
  waits for the driver), to whichever actor has room: uneven clients leave no node idle.
- Per-client results (non-mergeable rounds, failures) are yielded in that same order,
  whatever order they finish in, so the engine folds them exactly as it does the
  sequential executor's: the aggregate is bitwise the same.
- Mergeable rounds: each actor folds its clients into a partial sum; at the end one actor
  per node combines the partial sums of its node (read from the node's shared memory)
  and only that one partial sum per node reaches the driver.
- An actor lost with its node (or its process) takes its work with it: the clients it
  had folded and the one it had queued are re-run elsewhere, and the client it was
  training too, up to ``max_retries`` times (then that client is reported as failed).
  Every re-run is logged and counted (``retried``; the round's ``clients_retried``).
- With cohort training (``RayExecutor(cohort=...)``, issue 13) an actor is handed a share
  of ``share_size`` clients at a time and trains it as cohorts, answering per client; a
  share lost with its actor cannot say which client was to blame, so its clients are
  re-run one at a time (no attempt charged), and the culprit is then judged as above.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.serialization import to_bytes
from fedloom.core.update import UpdateReport
from fedloom.core.weights import Weights
from fedloom.sim.executor import ClientFailure, ExecutorResult, MergedUpdates
from fedloom.sim.ray_slots import Slot, SlotPool
from fedloom.sim.worker_fit import Message, cohort_header, fit_header, partial_from, result_from

log = logging.getLogger("fedloom.sim.ray")

#: clients handed to one actor at a time (one training, one waiting)
DEPTH = 2
#: how long a ping may take before an actor counts as gone
PING_SECONDS = 30.0


def share_size(clients: int, actors: int, cohort: str | int) -> int:
    """Clients per share: every actor one large cohort (``ceil(clients / actors)``), at most N."""
    size = max(1, math.ceil(clients / max(1, actors)))
    return min(size, cohort) if isinstance(cohort, int) else size


def lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the work was lost with its worker or node (not the client's own error)."""
    from ray import exceptions as rex

    actor_gone = (rex.RayActorError, rex.ActorUnschedulableError)
    return (*actor_gone, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)


class RayRound:
    """The scheduling state of one round (see the module docstring)."""

    def __init__(
        self,
        pool: SlotPool,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        merge: bool,
        state_dir: str | None,
        max_retries: int,
    ) -> None:
        import ray

        self.ray, self.lost = ray, lost_errors()
        #: what a node's combine may raise when one of its actors was lost (checked before retrying)
        self.lost_or_failed: tuple[type[BaseException], ...] = (*self.lost, ray.exceptions.RayTaskError)
        self.pool, self.round, self.weights, self.configs = pool, round, weights, configs
        self.merge, self.state_dir, self.max_retries = merge, state_dir, max_retries
        self.queue: deque[str] = deque(configs)
        self.order = {client_id: i for i, client_id in enumerate(configs)}
        self.inflight: dict[Any, tuple[Slot, list[str]]] = {}  # object ref -> (actor, its clients)
        self.share_size = 1  # clients handed out together, trained as cohorts (set by the executor)
        self.alone: set[str] = set()  # clients of a lost share: handed out one at a time from then on
        self.outstanding: dict[int, deque[Any]] = {}  # actor index -> its refs, oldest first
        self.begun: set[int] = set()
        self.attempts: dict[str, int] = {}
        self.retried = 0
        self._waiting: dict[int, ExecutorResult | None] = {}
        self._next = 0
        self._payload = ray.put(to_bytes(weights, round=round))

    def execute(self) -> Iterator[ExecutorResult]:
        while True:
            while self.queue or self.inflight:
                yield from self._step()
            if not self.merge:
                return
            yield from self._flush()
            if not self.queue:  # an actor lost while combining sent its clients back to the queue
                return

    # -- handing out and collecting ------------------------------------------------
    def _top_up(self) -> None:
        for slot in self.pool.slots:
            if slot.index not in self.begun:
                slot.merged = []
                slot.actor.begin_round.remote(self._payload, self.merge)
                self.begun.add(slot.index)
            refs = self.outstanding.setdefault(slot.index, deque())
            while self.queue and len(refs) < DEPTH:
                share = self._next_share()
                if len(share) == 1:
                    ref = slot.actor.fit.remote(fit_header(share[0], self.configs[share[0]], self.state_dir))
                else:
                    configs = {client_id: self.configs[client_id] for client_id in share}
                    ref = slot.actor.fit_cohort.remote(cohort_header(self.round, configs, self.state_dir))
                self.inflight[ref] = (slot, share)
                refs.append(ref)

    def _next_share(self) -> list[str]:
        """The next clients to hand out together: up to ``share_size``, a client of a lost share alone."""
        share = [self.queue.popleft()]
        if share[0] in self.alone:
            return share
        while self.queue and len(share) < self.share_size and self.queue[0] not in self.alone:
            share.append(self.queue.popleft())
        return share

    def _step(self) -> Iterator[ExecutorResult]:
        if self.queue and not self.pool.slots:
            yield from self._refill()
        self._top_up()
        if not self.inflight:
            return
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
        for ref in ready:
            if ref not in self.inflight:  # already settled with its lost actor
                continue
            slot, share = self.inflight.pop(ref)
            self.outstanding[slot.index].remove(ref)
            try:
                answer = self.ray.get(ref)
            except self.lost as exc:
                yield from self._lost(slot, share, exc)
                continue
            messages: list[Message] = [answer] if len(share) == 1 else answer
            for message in messages:
                result = result_from(self.round, message)
                if isinstance(result, UpdateReport):
                    slot.merged.append(result)
                    yield from self._settle(result.client_id, None)
                else:
                    yield from self._settle(result.client_id, result)

    def _settle(self, client_id: str, result: ExecutorResult | None) -> Iterator[ExecutorResult]:
        """Yield per-client results in the round's order (``None``: folded into a partial sum)."""
        index = self.order[client_id]
        if index < self._next:  # re-run after its first result was already passed on
            if result is not None:
                yield result
            return
        self._waiting[index] = result
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            self._next += 1
            if ready is not None:
                yield ready

    def _refill(self) -> Iterator[ExecutorResult]:
        """Every actor is gone: start new ones where nodes are left, else fail what remains."""
        try:
            self.pool.fill()
        except ConfigError as exc:
            while self.queue:
                client_id = self.queue.popleft()
                message = f"no Ray node is left that can train it: {exc}"
                yield from self._settle(client_id, ClientFailure(client_id, self.round, message, ""))

    # -- losses ---------------------------------------------------------------------
    def _lost(self, slot: Slot, share: list[str], exc: BaseException) -> Iterator[ExecutorResult]:
        """``slot`` died: re-queue what it held; retry the client it was training, or fail it
        (a lost cohort share: its clients are re-run one at a time, so the culprit is found)."""
        refs = self.outstanding.pop(slot.index, deque())
        queued = [client_id for ref in refs if ref in self.inflight for client_id in self.inflight.pop(ref)[1]]
        folded = [report.client_id for report in slot.merged]
        slot.merged = []
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.pool.remove(slot, reason)
        self._requeue([*folded, *queued])
        if len(share) > 1:
            message = "round %d: a cohort share of %d clients was lost; re-running them one at a time"
            log.warning(message, self.round, len(share))
            self.alone.update(share)
            self._requeue(share)
            return
        client_id = share[0]
        self.attempts[client_id] = self.attempts.get(client_id, 0) + 1
        if self.attempts[client_id] <= self.max_retries:
            log.warning("round %d: client %s lost with its Ray worker; retrying it elsewhere", self.round, client_id)
            self._requeue([client_id])
            return
        message = f"lost with its Ray worker {self.attempts[client_id]} time(s) ({reason}); max_retries is exhausted"
        yield from self._settle(client_id, ClientFailure(client_id, self.round, message, str(exc)))

    def _requeue(self, client_ids: list[str]) -> None:
        """Put clients back at the front of the queue, in the round's order."""
        if client_ids:
            log.warning("round %d: re-running %d client(s) lost with a Ray worker", self.round, len(client_ids))
        self.retried += len(client_ids)
        self.queue.extendleft(sorted(client_ids, key=self.order.__getitem__, reverse=True))

    # -- merged rounds ----------------------------------------------------------------
    def _flush(self) -> Iterator[MergedUpdates]:
        """One partial sum per node, combined on the node; a node that fails here re-queues its clients."""
        by_node: dict[str, list[Slot]] = {}
        for slot in self.pool.slots:
            by_node.setdefault(slot.node, []).append(slot)
        calls = []
        for slots in by_node.values():
            leader, others = slots[0], [s for s in slots[1:] if s.merged]
            if not (leader.merged or others):
                continue
            ref = leader.actor.combine.remote([s.actor.flush.remote() for s in others])
            calls.append((ref, [leader, *others]))
        for ref, involved in calls:
            reports = [report for slot in involved for report in slot.merged]
            try:
                message = self.ray.get(ref)
            except self.lost_or_failed as exc:
                self._lost_combining(involved, exc)
                continue
            for slot in involved:
                slot.merged = []
            yield MergedUpdates(reports, partial_from(self.weights, message))

    def _lost_combining(self, involved: list[Slot], exc: BaseException) -> None:
        """A node's combine failed: drop its dead actors and re-run every client it had folded
        (the live actors' partial sums were flushed, so those clients are gone too)."""
        dead = [slot for slot in involved if not self._answers(slot)]
        if not dead:
            raise exc  # no actor was lost: a real error, not one to retry
        reason = f"{type(exc).__name__} while combining the node's partial sums"
        for slot in dead:
            self.pool.remove(slot, reason)
        folded = [report.client_id for slot in involved for report in slot.merged]
        for slot in involved:
            slot.merged = []
        self._requeue(folded)

    def _answers(self, slot: Slot) -> bool:
        try:
            self.ray.get(slot.actor.node.remote(), timeout=PING_SECONDS)
        except Exception:  # dead, unreachable or too slow: counted as gone either way
            return False
        return True
