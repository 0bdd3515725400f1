"""Which aggregator an agent works with (rendezvous hashing) and how it moves when that one is gone."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

from fedloom.client.aggregator_choice import AggregatorFailover, rendezvous_order, server_key
from fedloom.client.answers import AggregatorUnavailableError
from fedloom.core.errors import ConfigError

SERVERS = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"]
NAMES = [f"site-{i}" for i in range(600)]


def test_the_ranking_is_stable_and_ignores_the_order_the_urls_are_given_in() -> None:
    for name in NAMES[:50]:
        order = rendezvous_order(name, SERVERS)
        assert sorted(order) == sorted(SERVERS)
        assert rendezvous_order(name, list(reversed(SERVERS))) == order
        assert rendezvous_order(name, [f"{u}/" for u in SERVERS]) == order  # a trailing slash is the same URL
    assert rendezvous_order("site-7", SERVERS) == rendezvous_order("site-7", SERVERS)


def test_agents_spread_over_the_aggregators() -> None:
    first = Counter(rendezvous_order(name, SERVERS)[0] for name in NAMES)
    assert set(first) == set(SERVERS)
    assert all(150 <= count <= 250 for count in first.values()), first  # ~200 each


def test_removing_an_aggregator_moves_only_its_own_agents_each_to_its_next_choice() -> None:
    gone = SERVERS[1]
    rest = [u for u in SERVERS if u != gone]
    for name in NAMES:
        before = rendezvous_order(name, SERVERS)
        after = rendezvous_order(name, rest)
        if before[0] != gone:
            assert after[0] == before[0], name  # the others stay where they are
        else:
            assert after[0] == before[1], name  # the gone one's agents take their second choice
    # modulo hashing would move most agents; rendezvous moves about a third (the removed one's share)
    moved = sum(rendezvous_order(n, SERVERS)[0] != rendezvous_order(n, rest)[0] for n in NAMES)
    assert moved == sum(rendezvous_order(n, SERVERS)[0] == gone for n in NAMES) < len(NAMES) / 2


def test_bad_url_lists_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        rendezvous_order("a", [])
    with pytest.raises(ConfigError, match="given twice"):
        rendezvous_order("a", ["http://x:1", "http://x:1/"])


class Sessions:
    """Fake agent sessions: every aggregator in ``down`` fails as an unreachable one does."""

    def __init__(self, down: set[str], outcome: Literal["finished", "stopped"] = "finished") -> None:
        self.down, self.outcome, self.opened = down, outcome, []

    @contextmanager
    def __call__(self, url: str, state_dir: Path) -> Iterator[Sessions]:
        self.opened.append((url, state_dir))
        self._url = url
        yield self

    def run(self) -> Literal["finished", "stopped"]:
        if self._url in self.down:
            raise AggregatorUnavailableError(0, "ConnectError", "connection refused", what="asking for the task")
        return self.outcome


def test_an_unreachable_aggregator_makes_the_agent_move_to_its_next_choice(tmp_path: Path) -> None:
    order = rendezvous_order("site-3", SERVERS)
    sessions = Sessions(down={order[0]})
    failover = AggregatorFailover("site-3", SERVERS, tmp_path, sessions)
    assert failover.run() == "finished"
    assert [url for url, _ in sessions.opened] == order[:2]
    # each aggregator has its own state directory: credential and pending upload belong to one run
    dirs = [d for _, d in sessions.opened]
    assert dirs == [tmp_path / "aggregators" / server_key(u) for u in order[:2]] and dirs[0] != dirs[1]
    # the choice is kept: a restarted agent goes back to where it was, not to its first choice
    assert json.loads((tmp_path / "aggregator.json").read_text())["server"] == order[1]
    again = Sessions(down=set())
    AggregatorFailover("site-3", SERVERS, tmp_path, again).run()
    assert [url for url, _ in again.opened] == [order[1]]


def test_the_agent_goes_round_the_ranking_and_gives_up_after_max_moves(tmp_path: Path) -> None:
    order = rendezvous_order("site-9", SERVERS)
    sessions = Sessions(down=set(SERVERS))
    with pytest.raises(AggregatorUnavailableError, match="connection refused"):
        AggregatorFailover("site-9", SERVERS, tmp_path, sessions, max_moves=4).run()
    assert [url for url, _ in sessions.opened] == [*order, *order[:2]]


def test_a_stopped_agent_does_not_move(tmp_path: Path) -> None:
    sessions = Sessions(down=set(), outcome="stopped")
    assert AggregatorFailover("site-1", SERVERS, tmp_path, sessions).run() == "stopped"
    assert len(sessions.opened) == 1


# --------------------------------------------------------------------- `fedloom agent --server A --server B`


def _fake_module():
    """tests/client/test_agent.py (its fake aggregator), imported by path: tests are not a package."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_agent_tests_for_choice", Path(__file__).with_name("test_agent.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TRAINER = """
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
import numpy as np

def make_trainer():
    rng = np.random.default_rng(0)
    return NumpyLogisticTrainer(rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40), 3)
"""


def test_the_agent_command_moves_from_an_unreachable_aggregator_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from fedloom.cli import agent as agent_cli
    from fedloom.cli.main import main

    fakes = _fake_module()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.py").write_text(TRAINER)
    fake = fakes.FakeAggregator(fakes.initial_weights(), max_rounds=1)
    down, up = "http://down.test", "http://up.test"
    name = next(f"site-{i}" for i in range(100) if rendezvous_order(f"site-{i}", [down, up])[0] == down)
    tried: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.host)
        if request.url.host == "down.test":
            raise httpx.ConnectError("connection refused", request=request)
        return fake.handle(request)

    original = agent_cli.make_client
    made = []

    def make_client(args, server=None, **overrides):
        client = original(args, server, transport=httpx.MockTransport(handle), **overrides)
        made.append(client)
        return client

    monkeypatch.setattr(agent_cli, "make_client", make_client)
    monkeypatch.setenv(agent_cli.TOKEN_ENV, fakes.SITE_TOKEN)
    argv = ["agent", "--server", up, "--server", down, "--name", name, "--trainer", "site.py:make_trainer"]
    assert main([*argv, "--poll-wait", "0", "--max-retries", "0"]) == 0
    assert tried[0] == "down.test" and set(tried[1:]) == {"up.test"}  # its first choice, then the next
    assert [c.retry.max_attempts for c in made] == [1, 1]
    assert [a["round"] for a in fake.accepted] == [1]  # it trained and uploaded on the aggregator it moved to
    state = tmp_path / f"fedloom-agent-{name}"
    assert json.loads((state / "aggregator.json").read_text())["server"] == up
    assert json.loads((state / "aggregators" / server_key(up) / "state.json").read_text())["state"] == "finished"


def test_several_servers_bound_the_retries_of_a_request_unless_told() -> None:
    import argparse

    from fedloom.cli import agent as agent_cli

    several = argparse.Namespace(server=SERVERS[0], servers=SERVERS, ca_file=None, max_retries=None)
    with agent_cli.make_client(several, SERVERS[2]) as client:
        assert client.retry.max_attempts == agent_cli.FAILOVER_ATTEMPTS and client.base_url == SERVERS[2]
    one = argparse.Namespace(server=SERVERS[0], ca_file=None, max_retries=None)
    with agent_cli.make_client(one) as client:
        assert client.retry.max_attempts is None  # one aggregator: ride out its outages forever, as before
    parser = argparse.ArgumentParser()
    agent_cli.register(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["agent", "--server", SERVERS[1], "--server", SERVERS[0], "--trainer", "m:f"])
    assert (parsed.server, parsed.servers) == (SERVERS[1], [SERVERS[1], SERVERS[0]])  # the first stays a string
