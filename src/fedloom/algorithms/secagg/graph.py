"""The round's communication graph: who shares secrets with, and masks against, whom.

SecAgg+ (Bell et al. 2020) replaces the complete graph of SecAgg with a k-regular one, so
each client's work grows with k, not with the number of clients. The graph is a Harary
circulant over a seeded permutation of the selected ids: ids are placed on a circle in an
order only the seed decides, and each is joined to the k/2 nearest on each side (plus the
opposite one when k is odd). Every client can compute it from the selection and the seed,
so the server cannot draw a different graph for different clients. ``k = n - 1`` is the
complete graph.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for


class CommunicationGraph:
    """An undirected k-regular graph over one round's selected client ids."""

    def __init__(self, selected: Sequence[str], degree: int, seed: int, round: int) -> None:
        ids = sorted(set(selected))
        if len(ids) != len(selected):
            raise ConfigError("the selected client ids of a secure round must be distinct")
        n = len(ids)
        if not 1 <= degree <= n - 1:
            raise ConfigError(f"secagg neighbours must be in [1, {n - 1}] for {n} clients, got {degree}")
        if degree % 2 == 1 and n % 2 == 1:
            degree += 1  # no odd-degree regular graph has an odd number of vertices; n - 1 is even here
        order = [ids[i] for i in rng_for(seed, "secagg-graph", round).permutation(n)]
        position = {cid: i for i, cid in enumerate(order)}
        self.degree = degree
        self._neighbours: dict[str, frozenset[str]] = {}
        for cid in ids:
            here = position[cid]
            steps = list(range(1, degree // 2 + 1))
            near = {order[(here + s) % n] for s in steps} | {order[(here - s) % n] for s in steps}
            if degree % 2 == 1:
                near.add(order[(here + n // 2) % n])
            self._neighbours[cid] = frozenset(near)
        self.ids = tuple(ids)
        self._points = {cid: i + 1 for i, cid in enumerate(ids)}

    def neighbours(self, client_id: str) -> frozenset[str]:
        """The ids joined to ``client_id``."""
        return self._neighbours[client_id]

    def point(self, client_id: str) -> int:
        """The Shamir x-coordinate of ``client_id``'s shares (its 1-based place among the sorted ids)."""
        return self._points[client_id]

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._neighbours
