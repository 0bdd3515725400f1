"""In-process federations over real sockets: a top aggregator, optional edge aggregators, light devices.

``run_flat`` connects every device to the top; ``run_edges`` puts an :class:`EdgeNode` (downstream
aggregator + upstream agent, exactly what ``fedloom edge`` runs) between the top and each group.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack

from aggregator_helpers import config
from live_server import serving

from fedloom.cli.edge_node import EDGE_MAX_ROUNDS, EdgeNode
from fedloom.client.agent import Agent
from fedloom.client.transport import AggregatorClient
from fedloom.light import LightAgent, LightClient
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app
from fedloom.store import SqlStore

FAST = {"check_interval_seconds": 0.05, "linger_seconds": 0.0}


class FullSite:
    """Marks a site run by the full agent (``factory`` makes its fedloom Trainer)."""

    def __init__(self, factory):
        self.factory = factory


def start_device(url, store, tmp_path, name, trainer, errors):
    """A light device, or a full ``fedloom agent`` (lineage checks on) when ``trainer`` is a FullSite."""

    def run():
        token = store.create_token(name)
        if isinstance(trainer, FullSite):
            client = AggregatorClient(url, timeout=10)
            agent = Agent(client, trainer.factory, tmp_path / name, name, token, poll_wait=0.5, handle_signals=False)
        else:
            client = LightClient(url, timeout=10)
            agent = LightAgent(
                client, trainer, str(tmp_path / name), name, token, poll_wait=0.5, min_poll_interval=0.05
            )
        try:
            agent.run()
        except BaseException as exc:
            errors.append((name, exc))
        finally:
            if isinstance(client, AggregatorClient):
                client.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def top_aggregator(tmp_path, initial, rounds, agents, **settings):
    store = SqlStore.open_default(tmp_path / "top")
    fields = {"min_agents": agents, "max_rounds": rounds, **FAST, **settings}
    return store, Aggregator(config(**fields), store, initial_weights=initial)


def run_flat(tmp_path, initial, trainers, rounds, **settings):
    """Every device talks to the top; returns (top store, top run id, errors)."""
    store, top = top_aggregator(tmp_path, initial, rounds, len(trainers), **settings)
    errors: list = []
    with serving(create_app(top)) as url:
        threads = [start_device(url, store, tmp_path / "flat", f"dev-{i}", t, errors) for i, t in enumerate(trainers)]
        for thread in threads:
            thread.join(60)
    return store, top.run_id, errors


def run_edges(tmp_path, initial, groups, rounds, edge_settings=None, **settings):
    """One edge per group of devices; returns (top store, top run id, edge nodes, errors)."""
    store, top = top_aggregator(tmp_path, initial, rounds, len(groups), **settings)
    errors: list = []
    nodes, threads = [], []
    with ExitStack() as stack:
        top_url = stack.enter_context(serving(create_app(top)))
        site = 0
        for e, group in enumerate(groups):
            edge_store = stack.enter_context(SqlStore.open_default(tmp_path / f"edge-{e}" / "home"))
            fields = {"min_agents": len(group), "max_rounds": EDGE_MAX_ROUNDS, **FAST, **(edge_settings or {})}
            upstream = stack.enter_context(AggregatorClient(top_url, timeout=10))
            node = EdgeNode(
                config(**fields),
                edge_store,
                upstream,
                name=f"edge-{e}",
                state_dir=tmp_path / f"edge-{e}" / "upstream",
                join_token=store.create_token(f"edge-{e}"),
                poll_wait=0.5,
            )
            edge_url = stack.enter_context(serving(create_app(node.aggregator)))
            node.start()
            nodes.append((node, edge_store))
            for trainer in group:
                threads.append(
                    start_device(edge_url, edge_store, tmp_path / f"edge-{e}", f"dev-{site}", trainer, errors)
                )
                site += 1
        for thread in threads:
            thread.join(60)
        for node, _ in nodes:
            node.stop()
            if node.error is not None:
                errors.append((node.agent.name, node.error))
    return store, top.run_id, nodes, errors


def global_models(store, run_id):
    return [store.load_global_model(run_id, m.round) for m in store.list_global_models(run_id)]
