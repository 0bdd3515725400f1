"""The join token reaches ``fedloom agent`` without showing in its command line.

``--token`` is readable by every local user in ``/proc/PID/cmdline``, so the agent also
takes ``FEDLOOM_AGENT_TOKEN`` and ``--token-file``, warns when ``--token`` is used, and
``federation up`` hands each agent its token through the environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedloom.cli import agent as agent_cli
from fedloom.cli import federation
from fedloom.cli.main import main
from fedloom.client.transport import AggregatorClient


def _fake_module() -> Any:
    """tests/client/test_agent.py (its fake aggregator), imported by path: tests are not a package."""
    spec = importlib.util.spec_from_file_location("_agent_tests_for_token", Path(__file__).with_name("test_agent.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_fakes = _fake_module()
SITE_TOKEN: str = _fakes.SITE_TOKEN
TRAINER = """
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
import numpy as np

def make_trainer():
    rng = np.random.default_rng(0)
    return NumpyLogisticTrainer(rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40), 3)
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """A fake aggregator wired into ``fedloom agent`` and the argv of an agent without a token."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(agent_cli.TOKEN_ENV, raising=False)
    (tmp_path / "site.py").write_text(TRAINER)
    fake = _fakes.FakeAggregator(_fakes.initial_weights(), max_rounds=1)
    original = agent_cli.make_client

    def make_client(args: argparse.Namespace, **overrides: Any) -> AggregatorClient:
        return original(args, transport=httpx.MockTransport(fake.handle), **overrides)

    monkeypatch.setattr(agent_cli, "make_client", make_client)
    argv = ["agent", "--server", "http://agg.test", "--name", "site-a", "--trainer", "site.py:make_trainer"]
    return fake, [*argv, "--poll-wait", "0"]


def test_the_token_comes_from_the_environment(
    site: tuple[Any, list[str]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake, argv = site
    monkeypatch.setenv("FEDLOOM_AGENT_TOKEN", SITE_TOKEN)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        assert main(argv) == 0
    assert fake.registrations == 1 and [a["round"] for a in fake.accepted] == [1]
    assert "visible to other local users" not in caplog.text


def test_the_token_comes_from_a_file(site: tuple[Any, list[str]], tmp_path: Path) -> None:
    fake, argv = site
    token_file = tmp_path / "join-token"
    token_file.write_text(f"{SITE_TOKEN}\n")  # a trailing newline, as `echo` writes it
    assert main([*argv, "--token-file", str(token_file)]) == 0
    assert fake.registrations == 1


def test_a_missing_or_empty_token_file_is_an_error_naming_it(
    site: tuple[Any, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, argv = site
    assert main([*argv, "--token-file", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "--token-file" in err and "nowhere" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert main([*argv, "--token-file", str(empty)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert main([*argv, "--token-file", str(empty), "--token", SITE_TOKEN]) == 1
    assert "not both" in capsys.readouterr().err
    assert fake.registrations == 0


def test_token_on_the_command_line_still_works_but_warns_once(
    site: tuple[Any, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    fake, argv = site
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        assert main([*argv, "--token", SITE_TOKEN]) == 0
    assert fake.registrations == 1
    warnings = [r.getMessage() for r in caplog.records if "visible to other local users" in r.getMessage()]
    assert len(warnings) == 1
    assert "FEDLOOM_AGENT_TOKEN" in warnings[0] and "--token-file" in warnings[0]
    assert SITE_TOKEN not in warnings[0]


def test_federation_passes_the_token_in_the_environment_not_the_argv(tmp_path: Path) -> None:
    argv = federation.agent_command("http://127.0.0.1:1", "site-0", tmp_path, tmp_path / "site.py", {"site": "0"})
    assert "--token" not in argv
    env = federation.agent_env("flj_secret")
    assert env["FEDLOOM_AGENT_TOKEN"] == "flj_secret"
    assert not any("flj_secret" in part for part in argv)
