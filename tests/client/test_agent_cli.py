"""``fedloom agent``: flags, and a whole run of examples/digits_site.py against the fake aggregator."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedloom.cli import agent as agent_cli
from fedloom.cli.main import main
from fedloom.client.transport import AggregatorClient


def _fake_module() -> Any:
    """tests/client/test_agent.py (its fake aggregator), imported by path: tests are not a package."""
    spec = importlib.util.spec_from_file_location("_agent_tests_for_cli", Path(__file__).with_name("test_agent.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_fakes = _fake_module()
FakeAggregator = _fakes.FakeAggregator
SITE_TOKEN = _fakes.SITE_TOKEN
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_site.py"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedloom")
    agent_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["agent", *argv])


def test_defaults() -> None:
    args = parse("--server", "https://agg:8443", "--trainer", "site:make")
    assert args.func is agent_cli.run
    assert (args.token, args.name, args.state_dir, args.ca_file) == (None, None, None, None)
    assert (args.trainer_arg, args.keep_stale, args.upload_initial) == ([], False, False)
    assert (args.max_retries, args.poll_wait, args.log_level) == (None, 30.0, "info")


def test_flags() -> None:
    args = parse(
        *("--server", "https://agg:8443", "--token", "flj_x", "--trainer", "site.py:make", "--name", "site-b"),
        *("--state-dir", "/var/lib/fl", "--ca-file", "ca.pem", "--trainer-arg", "a=1", "--trainer-arg", "b=2"),
        *("--keep-stale", "--upload-initial", "--max-retries", "3", "--log-level", "debug"),
    )
    assert args.trainer_arg == ["a=1", "b=2"]
    assert (args.keep_stale, args.upload_initial, args.max_retries, args.log_level) == (True, True, 3, "debug")
    client = agent_cli.make_client(argparse.Namespace(server="http://agg", ca_file=None, max_retries=3))
    assert client.retry.max_attempts == 4
    assert (
        agent_cli.make_client(
            argparse.Namespace(server="http://agg", ca_file=None, max_retries=None)
        ).retry.max_attempts
        is None
    )


def test_the_command_is_registered() -> None:
    with pytest.raises(SystemExit) as info:
        main(["agent", "--help"])
    assert info.value.code == 0


def wire_to(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = agent_cli.make_client

    def make_client(args: argparse.Namespace, **overrides: Any) -> AggregatorClient:
        return original(args, transport=httpx.MockTransport(fake.handle), **overrides)

    monkeypatch.setattr(agent_cli, "make_client", make_client)


def test_digits_site_runs_two_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    spec = f"{EXAMPLE}:make_trainer"
    from fedloom.client.loading import load_trainer_factory

    initial = load_trainer_factory(spec, {"site": "1"})().get_weights()
    fake = FakeAggregator(initial, max_rounds=2)
    wire_to(fake, monkeypatch)
    argv = ["agent", "--server", "http://agg.test", "--token", SITE_TOKEN, "--name", "site-1", "--trainer", spec]
    rc = main([*argv, "--trainer-arg", "site=1", "--poll-wait", "0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert [a["round"] for a in fake.accepted] == [1, 2]
    assert {a["num_samples"] for a in fake.accepted} == {449}  # site 1's third of the 1,347 training digits
    state = json.loads((tmp_path / "fedloom-agent-site-1" / "state.json").read_text())
    assert state["state"] == "finished"
    assert "round 2: upload ok" in err


def test_errors_exit_1_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["agent", "--server", "http://agg.test", "--trainer", "nowhere_xyz:make", "--name", "s"])
    assert rc == 1
    assert "no module named 'nowhere_xyz'" in capsys.readouterr().err
    rc = main(["agent", "--server", "http://agg.test", "--trainer", "x:y", "--trainer-arg", "oops"])
    assert rc == 1
    assert "key=value" in capsys.readouterr().err
    fake = FakeAggregator(None)
    wire_to(fake, monkeypatch)
    rc = main(["agent", "--server", "http://agg.test", "--trainer", f"{EXAMPLE}:make_trainer", "--name", "s"])
    assert rc == 1
    assert "no join token" in capsys.readouterr().err
