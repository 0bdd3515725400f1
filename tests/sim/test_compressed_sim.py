"""A simulated run with compressed updates: chosen per run, bytes per round in the history, accuracy kept."""

from __future__ import annotations

import pytest

from fedloom.core.errors import ConfigError
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config


def test_the_run_s_compression_reaches_every_client_s_fit_config():
    strategy = SimConfig(compression="topk", compression_topk=0.2).build_strategy()
    assert strategy.client.extra["compression"] == {"scheme": "topk", "topk_fraction": 0.2}
    assert "compression" not in SimConfig().build_strategy().client.extra
    with pytest.raises(ConfigError, match="compression scheme 'gzip' is unknown"):
        SimConfig(compression="gzip").build_strategy()


def test_int8_run_records_bytes_per_round_and_learns_like_the_plain_run():
    base = SimConfig(dataset="digits", clients=5, rounds=4, lr=0.5, batch_size=16)
    plain = simulate_config(base)
    small = simulate_config(SimConfig(**{**base.to_dict(), "compression": "int8"}))
    for summary in small.history:
        wire, tensors = summary.metrics["upload_wire_bytes"], summary.metrics["upload_tensor_bytes"]
        assert wire < 0.5 * tensors  # float32 weights as int8: a quarter of the bytes, plus the header
    assert "upload_wire_bytes" not in plain.history[-1].metrics
    assert small.history[-1].metrics["accuracy"] >= plain.history[-1].metrics["accuracy"] - 0.03


def test_fedloom_sim_takes_the_compression_flags(capsys):
    from fedloom.cli.main import main

    assert main(["sim", "--clients", "3", "--rounds", "1", "--no-store", "--compression", "topk"]) == 0
    assert main(["sim", "--rounds", "1", "--no-store", "--compression", "topk", "--compression-topk", "2"]) != 0
    assert "topk_fraction must be a number in (0, 1], got 2.0" in capsys.readouterr().err
