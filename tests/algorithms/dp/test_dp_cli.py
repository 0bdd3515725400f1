"""``fedloom sim --dp ...`` runs a DP simulation; ``fedloom runs show`` prints its ε and why it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.cli.main import main
from fedloom.core.errors import ConfigError
from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")

SIM = ["sim", "--clients", "20", "--fraction", "0.5", "--rounds", "10", "--lr", "0.5"]


def test_sim_flags_then_runs_show_prints_epsilon_and_the_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    home = str(tmp_path / "home")
    # z = 4 (accounted 2), 10 of 20: ε = 2.78 after round 3 and 3.39 after round 4
    dp = ["--dp", "central", "--dp-noise", "4", "--dp-clip", "5", "--dp-delta", "1e-4", "--dp-target-epsilon", "3"]
    assert main([*SIM, *dp, "--home", home]) == 0
    captured = capsys.readouterr()
    assert "DP central" in captured.out
    assert "epsilon 2.784" in captured.err  # the progress line of round 3
    assert "stopped after round 3: the next round would exceed the target epsilon 3" in captured.err
    with SqlStore.open_default(home) as store:
        run = store.list_runs()[0]
        epsilon = store.metric_series(run.id, "privacy/epsilon")
    assert len(epsilon) == 3 and epsilon[-1][1] <= 3
    assert main(["runs", "show", run.id, "--home", home]) == 0
    shown = capsys.readouterr().out
    line = next(x for x in shown.splitlines() if x.startswith("privacy"))
    assert f"central DP: epsilon = {epsilon[-1][1]:.4g} at delta = 0.0001 after round {len(epsilon)}" in line
    assert "stopped: the next round would exceed the target epsilon 3" in line
    assert "to whoever knows who was selected" in line
    assert "EPSILON" in shown


def test_dp_flags_without_a_mode_or_with_a_bad_value_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SIM, "--dp-noise", "1.0", "--no-store"]) == 1
    assert "--dp central|client|local" in capsys.readouterr().err
    assert main([*SIM, "--dp", "central", "--dp-noise", "1.0", "--dp-delta", "1e-5", "--no-store"]) == 1
    assert "clip_norm is missing" in capsys.readouterr().err
    assert main([*SIM, "--dp", "central", "--dp-noise", "1", "--dp-clip", "1", "--dp-delta", "0.1", "--no-store"]) == 1
    assert "delta=0.1 is not below 1/number of clients = 1/20" in capsys.readouterr().err


def test_a_sim_config_file_takes_a_privacy_table(tmp_path: Path) -> None:
    from fedloom.sim.config import load_config_file

    config_file = tmp_path / "sim.toml"
    config_file.write_text(
        'clients = 20\nfraction = 0.5\n[privacy]\nmode = "local"\nnoise_multiplier = 2\nclip_norm = 1\ndelta = 1e-4\n'
    )
    settings = load_config_file(config_file).privacy_settings()
    assert settings is not None and settings.mode == "local" and settings.noise_multiplier == 2.0
    config_file.write_text('clients = 20\n[privacy]\nmode = "central"\nnoise = 2\n')
    with pytest.raises(ConfigError, match="unknown privacy setting 'noise'"):
        load_config_file(config_file)
