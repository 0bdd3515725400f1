"""``fedloom token create|revoke|list`` against stores in tmp_path."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from fedloom.cli.token import register
from fedloom.core.errors import StoreError
from fedloom.store import SqlStore
from fedloom.store.sql import sqlite_url

TOKEN = re.compile(r"flj_[A-Za-z0-9_-]{43}")


def _parser() -> argparse.ArgumentParser:
    """A stand-alone ``fedloom`` parser holding only ``token`` (other commands belong to others)."""
    parser = argparse.ArgumentParser(prog="fedloom")
    register(parser.add_subparsers(dest="command"))
    return parser


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(list(argv))
    code = args.func(args)
    return code, capsys.readouterr().out


def _list_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "AGENTS", "CREATED", "REVOKED"]
    return [line.split() for line in lines[1:]]


def test_create_prints_the_token_once_with_instructions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code, out = _run(capsys, "token", "create", "--name", "site-a", "--home", str(home))
    assert code == 0
    tokens = TOKEN.findall(out)
    assert len(tokens) == 1  # printed exactly once
    assert "shown only this once" in out
    assert "fedloom agent --server URL --token TOKEN" in out
    assert str(home) in out
    with SqlStore.open_default(home) as store:
        record = store.verify_join_token(tokens[0])
        assert record is not None
        assert (record.name, record.role) == ("site-a", "agent")


def test_admin_tokens_and_the_list_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path)
    _run(capsys, "token", "create", "--name", "site-a", "--home", home)
    _, out = _run(capsys, "token", "create", "--name", "ops", "--admin", "--home", home)
    assert "admin join token 'ops'" in out
    code, out = _run(capsys, "token", "list", "--home", home)
    assert code == 0
    assert not TOKEN.search(out)  # listing never shows a secret
    rows = _list_rows(out)
    assert [(r[0], r[1], r[-1]) for r in rows] == [("site-a", "agent", "-"), ("ops", "admin", "-")]
    assert rows[0][5] == "UTC"  # CREATED is "YYYY-MM-DD HH:MM:SS UTC"


def test_revoke_marks_the_token_and_locks_out_its_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path)
    _, out = _run(capsys, "token", "create", "--name", "site-a", "--home", home)
    (token,) = TOKEN.findall(out)
    with SqlStore.open_default(home) as store:
        run_id = store.create_run("deploy", "deployment", {}, seed=0)
        record = store.verify_join_token(token)
        assert record is not None
        _, credential = store.register_agent(run_id, "site-a", record)
    code, out = _run(capsys, "token", "revoke", "--name", "site-a", "--home", home)
    assert code == 0
    assert "Revoked token 'site-a'" in out
    with SqlStore.open_default(home) as store:
        assert store.verify_join_token(token) is None
        assert store.authenticate(credential) is None
    (row,) = _list_rows(_run(capsys, "token", "list", "--home", home)[1])
    assert row[-1] == "UTC"  # REVOKED holds a time
    _, out = _run(capsys, "token", "create", "--name", "site-a", "--home", home)  # the name is free again
    assert len(_list_rows(_run(capsys, "token", "list", "--home", home)[1])) == 2


def test_errors_are_store_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    with pytest.raises(StoreError, match="no store"):
        _run(capsys, "token", "revoke", "--name", "site-a", "--home", home)
    assert not (tmp_path / "home").exists()  # revoking or listing never creates a store
    _run(capsys, "token", "create", "--name", "site-a", "--home", home)
    with pytest.raises(StoreError, match="revoke it first"):
        _run(capsys, "token", "create", "--name", "site-a", "--home", home)
    with pytest.raises(StoreError, match="no token named 'ghost'"):
        _run(capsys, "token", "revoke", "--name", "ghost", "--home", home)
    with pytest.raises(StoreError, match="token name"):
        _run(capsys, "token", "create", "--name", "bad name", "--home", home)


def test_list_on_an_empty_or_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "token", "list", "--home", str(tmp_path / "nothing"))
    assert code == 0
    assert "No tokens" in out
    assert not (tmp_path / "nothing").exists()


def test_db_url_selects_any_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(tmp_path / "aggregator.db").render_as_string(hide_password=False)
    _, out = _run(capsys, "token", "create", "--name", "site-a", "--db-url", url)
    (token,) = TOKEN.findall(out)
    assert "--db-url" in out
    with SqlStore(url) as store:
        assert store.verify_join_token(token) is not None
    assert _list_rows(_run(capsys, "token", "list", "--db-url", url)[1])[0][0] == "site-a"
    _run(capsys, "token", "revoke", "--name", "site-a", "--db-url", url)
    with SqlStore(url) as store:
        assert store.verify_join_token(token) is None
    with pytest.raises(StoreError, match="database URL"):
        _run(capsys, "token", "list", "--db-url", "not a url")


def test_home_and_db_url_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["token", "list", "--home", str(tmp_path), "--db-url", "sqlite://"])
    assert "not allowed with" in capsys.readouterr().err


def test_home_defaults_to_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLOOM_HOME", str(tmp_path / "env-home"))
    _run(capsys, "token", "create", "--name", "site-a")
    assert (tmp_path / "env-home" / "fedloom.db").is_file()
    assert _list_rows(_run(capsys, "token", "list")[1])[0][0] == "site-a"


def test_token_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "token")
    assert code == 2
    assert all(action in out for action in ("create", "revoke", "list"))


def test_fedloom_main_runs_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedloom.cli.main import main

    assert main(["token", "create", "--name", "site-a", "--home", str(tmp_path)]) == 0
    assert TOKEN.search(capsys.readouterr().out)
    assert main(["token", "create", "--name", "site-a", "--home", str(tmp_path)]) == 1
    assert "fedloom: error:" in capsys.readouterr().err


def test_max_agents_limits_a_token_and_list_shows_used_of_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path)
    _, out = _run(capsys, "token", "create", "--name", "lab", "--max-agents", "2", "--home", home)
    assert "up to 2 agents" in out
    (lab_token,) = TOKEN.findall(out)
    _, out = _run(capsys, "token", "create", "--name", "site-a", "--home", home)
    assert "(1 agent)" in out
    with SqlStore.open_default(home) as store:
        run_id = store.create_run("deploy", "deployment", {}, seed=0)
        lab = store.verify_join_token(lab_token)
        assert lab is not None
        store.register_agent(run_id, "lab-1", lab)
        store.register_agent(run_id, "lab-2", lab)
        with pytest.raises(StoreError, match="at most 2 agent name"):
            store.register_agent(run_id, "lab-3", lab)
    rows = _list_rows(_run(capsys, "token", "list", "--home", home)[1])
    assert [(r[0], r[2]) for r in rows] == [("lab", "2/2"), ("site-a", "0/1")]
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["token", "create", "--name", "x", "--max-agents", bad])
        assert "--max-agents: must be a whole number >= 1" in capsys.readouterr().err


def test_create_writes_the_token_to_a_new_private_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, path = tmp_path / "home", tmp_path / "site-a.token"
    code, out = _run(capsys, "token", "create", "--name", "site-a", "--home", str(home), "--token-file", str(path))
    assert code == 0 and TOKEN.search(out) is None  # not printed
    token = path.read_text(encoding="utf-8").strip()
    assert TOKEN.fullmatch(token) and path.stat().st_mode & 0o777 == 0o600
    store = SqlStore.open_default(home)
    try:
        record = store.verify_join_token(token)
        assert record is not None and record.name == "site-a"
        assert [t.name for t in store.list_tokens()] == ["site-a"]
    finally:
        store.close()
    with pytest.raises(StoreError, match="already exists: remove it"):
        _run(capsys, "token", "create", "--name", "site-b", "--home", str(home), "--token-file", str(path))
    assert path.read_text(encoding="utf-8").strip() == token  # never overwritten
    store = SqlStore.open_default(home)
    try:
        assert [t.name for t in store.list_tokens()] == ["site-a"]  # and no token made for site-b
    finally:
        store.close()
