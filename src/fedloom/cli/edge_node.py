"""An edge aggregator's parts, wired: its downstream aggregator, the relay, and its upstream agent.

The downstream side is a normal :class:`~fedloom.server.aggregator.Aggregator` (its own
store, run and port) whose strategy and lifecycle come from
:mod:`fedloom.server.edge_setup`; the upstream side is a normal
:class:`~fedloom.client.agent.Agent` (its own state directory) whose Trainer is
:class:`~fedloom.server.edge_relay.EdgeTrainer`: one downstream round per upstream
round. Both persist everything, so a killed edge restarted with the same home resumes
the round it was in: its leaves' stored updates are reloaded (never counted twice) and
a pending upstream upload is re-sent (a ``duplicate`` answer means it had landed).
:mod:`fedloom.cli.edge` serves it; the tests drive it in-process too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fedloom.client.agent import Agent
from fedloom.client.transport import AggregatorClient
from fedloom.core.observe import RoundObserver
from fedloom.core.store_protocols import DeploymentStore
from fedloom.server.aggregator import Aggregator
from fedloom.server.config import AggregatorConfig
from fedloom.server.edge_relay import EdgeRelay, EdgeTrainer
from fedloom.server.edge_setup import edge_lifecycle, edge_strategy
from fedloom.server.system_meter import ProcessSampler

__all__ = ["EDGE_MAX_ROUNDS", "EdgeNode"]

log = logging.getLogger("fedloom.edge")

#: an edge's own ``max_rounds`` unless set: the top decides when the run ends
EDGE_MAX_ROUNDS = 1_000_000


class EdgeNode:
    """One edge aggregator: :meth:`run_upstream` (a thread) trains upstream through the downstream rounds.

    ``on_exit`` is called when the upstream side ends (finished, stopped or failed), so the
    caller can stop serving once the leaves were told; ``error`` holds a failure.
    """

    def __init__(
        self,
        config: AggregatorConfig,
        store: DeploymentStore,
        upstream: AggregatorClient,
        *,
        name: str,
        state_dir: str | Path,
        join_token: str | None,
        allow_non_mean: bool = False,
        poll_wait: float = 30.0,
        observers: Sequence[RoundObserver] = (),
        system_sampler: ProcessSampler | None = None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self.relay = EdgeRelay()
        strategy = edge_strategy(config, self.relay, allow_non_mean=allow_non_mean)
        self.aggregator = Aggregator(
            config,
            store,
            strategy=strategy,
            lifecycle=edge_lifecycle(self.relay, strategy),
            observers=observers,
            system_sampler=system_sampler,
        )
        self.agent = Agent(
            upstream, self._trainer, state_dir, name, join_token, handle_signals=False, poll_wait=poll_wait
        )
        self.error: BaseException | None = None
        self._on_exit = on_exit
        self._thread: threading.Thread | None = None

    def _trainer(self) -> EdgeTrainer:
        return EdgeTrainer(self.relay, self.aggregator.set_initial_model, self.aggregator.tick)

    def start(self) -> None:
        """Run the upstream agent in a background thread."""
        self._thread = threading.Thread(target=self.run_upstream, name="edge-upstream", daemon=True)
        self._thread.start()

    def run_upstream(self) -> None:
        """The upstream agent until the top's run is finished; then the held downstream round closes
        with the top's final model and the downstream run finishes too."""
        try:
            outcome = self.agent.run()
        except BaseException as exc:  # reported by the caller; a stop while waiting is no failure
            if not self.relay.closed:
                log.exception("the upstream agent failed")
                self.error = exc
            self._on_exit()
            return
        if outcome == "finished":
            held = self.agent.store.load_global()
            self.relay.finish(None if held is None else held[0])
            self.aggregator.tick()
            log.info("the top aggregator's run is finished; finishing the edge's run")
        else:
            self._on_exit()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the upstream agent (a round it waits for is trained again after a restart)."""
        self.relay.close()
        self.agent.stop()
        if self._thread is not None:
            self._thread.join(timeout)
