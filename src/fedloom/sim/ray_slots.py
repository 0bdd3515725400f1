"""The Ray executor's workers: one actor per client a node can train at once.

Why actors, and why so many:

- Each actor reserves one client's resources (:class:`ClientResources`) for the whole
  run and trains one client at a time, so Ray's own accounting keeps a node from ever
  running more clients at once than its CPUs, GPUs and memory hold. Actors are pinned to
  their node (hard node affinity), so the executor knows which ones share a node and
  can merge their partial sums there.
- ``client_fn`` (and the data its closure holds) is put in Ray's object store once per
  run; every actor receives that one object, so each node fetches it once and its actors
  read the numpy arrays in it from the node's shared memory. Each round's global model
  is likewise one object (a safetensors payload) fetched once per node.
- The actor is a thin shell over :class:`~fedloom.sim.worker_fit.WorkerState`, the code
  the process-pool executor's workers run: the same fit, checks and pre-merging.

Ray itself is imported only inside these functions: the module loads without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.update import UpdateReport
from fedloom.sim.executor import ClientFn
from fedloom.sim.ray_resources import ClientResources
from fedloom.sim.worker_fit import Message, WorkerState, limit_threads, merge_partials

log = logging.getLogger("fedloom.sim.ray")


class ClientSlot:
    """The body of one Ray actor: trains the clients it is handed, one at a time or, with
    ``cohort`` "auto" or N, a share of the round as cohorts (:meth:`WorkerState.fit_cohort`)."""

    def __init__(self, client_fn: ClientFn, threads: int, cohort: str | int = "off") -> None:
        limit_threads(threads)
        self._client_fn = client_fn
        self._state = WorkerState(cohort=cohort)

    def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def begin_round(self, payload: bytes, merge: bool) -> None:
        self._state.begin_round(payload, merge)

    def fit(self, header: dict[str, Any]) -> Message:
        return self._state.fit(self._client_fn, header)

    def fit_cohort(self, header: dict[str, Any]) -> list[Message]:
        return list(self._state.fit_cohort(self._client_fn, header))

    def flush(self) -> Message:
        return self._state.flush()

    def combine(self, others: list[Any]) -> Message:
        """This actor's partial sum and those of ``others`` (object refs of other actors' ``flush``
        on the same node, so they are read from local shared memory) as one partial sum."""
        import ray

        assert self._state.weights is not None, "combine before begin_round"
        return merge_partials(self._state.weights, [self.flush(), *ray.get(others)])


@dataclass
class Slot:
    """One actor as the driver sees it: its handle, its node, and the clients folded in this round."""

    actor: Any
    node: str
    index: int
    merged: list[UpdateReport] = field(default_factory=list)


def alive_nodes() -> list[dict[str, Any]]:
    """Ray's description of every node currently alive, in the cluster's own order."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
    return [node for node in nodes if node.get("Alive")]


class SlotPool:
    """Every actor of the run, kept filled to what the live nodes can hold."""

    def __init__(self, client_fn: ClientFn, resources: ClientResources, cohort: str | int = "off") -> None:
        import ray

        self.resources = resources
        self.client_fn = client_fn
        self.cohort = cohort
        try:
            self._client_ref = ray.put(client_fn)
        except Exception as exc:  # cloudpickle refuses locks, open files, sockets...
            raise ConfigError(
                f"client_fn cannot be sent to the Ray workers ({type(exc).__name__}: {exc}); build such"
                " objects inside the Trainer instead of capturing them in client_fn"
            ) from exc
        self._actor_class = ray.remote(ClientSlot)
        self.slots: list[Slot] = []
        self._next_index = 0

    def fill(self) -> None:
        """Start actors on every live node until it holds as many clients as its resources allow
        (a node that lost an actor gets a new one; a dead node's actors are not replaced)."""
        nodes = alive_nodes()
        alive = {node["NodeID"] for node in nodes}
        self.slots = [slot for slot in self.slots if slot.node in alive]
        for node in nodes:
            have = sum(slot.node == node["NodeID"] for slot in self.slots)
            for _ in range(self.resources.clients_on(node.get("Resources", {})) - have):
                self.slots.append(self._start(node["NodeID"]))
        if not self.slots:
            raise ConfigError(self._no_room(nodes))

    def _start(self, node_id: str) -> Slot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        threads = max(1, math.ceil(self.resources.cpus))
        pinned = NodeAffinitySchedulingStrategy(node_id, soft=False)
        options = self._actor_class.options(**self.resources.actor_options(), scheduling_strategy=pinned)
        actor = options.remote(self._client_ref, threads, self.cohort)
        self._next_index += 1
        return Slot(actor, node_id, self._next_index)

    def _no_room(self, nodes: Sequence[dict[str, Any]]) -> str:
        shown = "; ".join(
            ", ".join(f"{k}={v:g}" for k, v in sorted(n.get("Resources", {}).items()) if k in ("CPU", "GPU", "memory"))
            or "no CPU, GPU or memory"
            for n in nodes
        )
        return (
            f"no node of the Ray cluster can train a client with {self.resources.describe()}"
            f" (live nodes: {shown or 'none'}); lower --ray-cpus-per-client / --ray-gpus-per-client /"
            " --ray-memory-per-client, or add nodes that have them"
        )

    def remove(self, slot: Slot, reason: str) -> None:
        """Forget an actor that died (its node is gone or its process crashed) and make sure it is stopped."""
        import ray

        if slot in self.slots:
            self.slots.remove(slot)
        log.warning("Ray worker %d on node %s lost: %s", slot.index, slot.node[:12], reason)
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception as exc:  # already gone with its node: nothing left to stop
            log.debug("ray.kill of a lost worker: %s", exc)

    def close(self) -> None:
        """Stop every actor of the run."""
        import ray

        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception as exc:  # its node is gone: nothing left to stop
                log.debug("ray.kill at close: %s", exc)
        self.slots = []
