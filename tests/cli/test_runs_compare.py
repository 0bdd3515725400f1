"""``fedloom runs compare``: the table's numbers are the store's, and the PNG draws the store's series."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedloom.cli.main import main
from fedloom.core.errors import ConfigError
from fedloom.store import SqlStore

SERIES = {
    "fast": [(1, 0.40), (2, 0.75), (3, 0.81), (4, 0.79)],
    "slow": [(1, 0.20), (2, 0.35), (3, 0.52), (4, 0.66), (5, 0.71)],
    "nan": [(1, 0.30), (2, math.nan), (3, 0.55)],
}


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Three finished runs with accuracy/loss per round, and one run with no metric at all."""
    root = tmp_path / "home"
    ids: dict[str, str] = {}
    with SqlStore.open_default(root) as store:
        for name, series in SERIES.items():
            run_id = ids[name] = store.create_run(name, "simulation", {}, seed=0)
            for rnd, acc in series:
                store.open_round(run_id, rnd, ["c1"])
                store.record_metrics(run_id, rnd, {"accuracy": acc, "loss": 2.0 - acc})
                store.close_round(run_id, rnd, num_updates=1, num_samples=10)
            store.finish_run(run_id, "finished")
        store.record_metrics(ids["slow"], 5, {"accuracy": 0.72})  # a later value of a round wins
        ids["empty"] = store.create_run("empty", "deployment", {}, seed=0)
    return root, ids


SIM = ("simulation", "finished")


def _compare(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["runs", "compare", *argv, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_values_equal_the_store(home: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = home
    code, out, _ = _compare(capsys, root, ids["fast"][:6], ids["slow"], ids["nan"], "--target", "0.7")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "KIND", "STATUS", "ROUNDS", "BEST_ACCURACY", "BEST_ROUND", "FINAL_ACCURACY", "FINAL_ROUND",
        "ROUND_TO_0.7",
    ]  # fmt: skip
    assert lines[1].split() == [ids["fast"][:8], "fast", *SIM, "4", "0.8100", "3", "0.7900", "4", "2"]
    assert lines[2].split() == [ids["slow"][:8], "slow", *SIM, "5", "0.7200", "5", "0.7200", "5", "5"]
    assert lines[3].split()[1:] == ["nan", *SIM, "3", "0.5500", "3", "0.5500", "3", "not", "reached"]


def test_json_and_a_loss_metric_is_minimised(
    home: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = home
    code, out, _ = _compare(capsys, root, ids["fast"], ids["empty"], "--metric", "loss", "--json", "--target", "1.3")
    assert code == 0
    fast, empty = json.loads(out)
    with SqlStore.open_default(root) as store:
        assert fast["series"] == [list(p) for p in store.metric_series(ids["fast"], "loss")]
    assert fast["goal"] == "min" and fast["best"] == {"round": 3, "value": pytest.approx(2.0 - 0.81)}
    assert fast["target_round"] == 2  # 2.0 - 0.75 = 1.25 <= 1.3
    assert empty["best"] is None and empty["final"] is None and empty["series"] == [] and empty["rounds"] == 0


def test_unknown_ids_are_all_named(home: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = home
    code, _, err = _compare(capsys, root, ids["fast"], "abcdef01", "0123456789")
    assert code == 1
    assert "no run with id 'abcdef01'" in err and "no run with id '0123456789'" in err


def test_refusals_name_the_fix(home: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = home
    code, _, err = _compare(capsys, root, ids["fast"], ids["fast"][:6])
    assert code == 1 and "named more than once" in err
    code, _, err = _compare(capsys, root, ids["fast"], "--metric", "acc")
    assert code == 1 and "pass --metric with one they did: accuracy, loss" in err
    code, _, err = _compare(capsys, root, ids["fast"], "--plot", str(root / "out.jpg"))
    assert code == 1 and "path ending in .png" in err
    code, _, err = _compare(capsys, root, ids["fast"], "--plot", str(root / "nowhere" / "out.png"))
    assert code == 1 and "does not exist" in err


def _in_fresh_python(code: str) -> Any:
    """Run ``code`` in a new interpreter and return the JSON its last line prints.

    matplotlib (about 55 MiB of RSS) then never enters the pytest process, whose forked
    workers tests/sim/test_memory.py measures later in the same session.
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


needs_matplotlib = pytest.mark.skipif(find_spec("matplotlib") is None, reason="matplotlib is not installed")


@needs_matplotlib
def test_plot_writes_a_png_of_the_store_series(home: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, ids = home
    out_png = tmp_path / "curves.png"
    argv = ["runs", "compare", ids["fast"], ids["slow"], ids["nan"], "--plot", str(out_png), "--home", str(root)]
    found = _in_fresh_python(
        "import contextlib, io, json\n"
        "from fedloom.cli.main import main\n"
        "from matplotlib.image import imread\n"
        "out = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out): code = main({argv!r})\n"
        f"pixels = imread({str(out_png)!r})\n"
        "print(json.dumps([code, out.getvalue(), list(pixels.shape), float(pixels.std())]))"
    )
    code, out, shape, spread = found
    assert code == 0 and f"plot: {out_png}" in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shape[:2] == [600, 1000]
    assert spread > 0.01  # something was drawn


@needs_matplotlib
def test_plotted_lines_are_the_store_series(home: tuple[Path, dict[str, str]]) -> None:
    root, ids = home
    drawn = _in_fresh_python(
        "import json\n"
        "from fedloom.cli.runs_compare import load_curves\n"
        "from fedloom.cli.runs_plot import plot_curves\n"
        "from fedloom.store import SqlStore\n"
        f"with SqlStore.open_default({str(root)!r}) as store:\n"
        f"    curves = load_curves(store, [{ids['slow']!r}, {ids['nan']!r}], 'accuracy')\n"
        "(axes,) = plot_curves(curves, 'accuracy').axes\n"
        "print(json.dumps({'title': axes.get_title(), 'x': axes.get_xlabel(), 'y': axes.get_ylabel(),\n"
        "    'xticks': [float(t) for t in axes.get_xticks()],\n"
        "    'legend': [t.get_text() for t in axes.get_legend().get_texts()],\n"
        "    'lines': [[list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))]\n"
        "              for line in axes.get_lines()]}))"
    )
    with SqlStore.open_default(root) as store:
        stored = {name: store.metric_series(ids[name], "accuracy") for name in ("slow", "nan")}
    assert drawn["title"] == "accuracy per round, 2 runs"
    assert (drawn["x"], drawn["y"]) == ("round", "accuracy")
    assert all(tick.is_integer() for tick in drawn["xticks"])  # rounds, not 1.25 / 1.5
    assert drawn["legend"] == [f"slow ({ids['slow'][:8]})", f"nan ({ids['nan'][:8]})"]
    slow, nan = drawn["lines"]
    assert slow == [[1, 2, 3, 4, 5], [0.20, 0.35, 0.52, 0.66, 0.72]]  # the last value of round 5
    assert dict(stored["slow"])[5] == 0.72
    assert nan[0] == [r for r, _ in stored["nan"]]
    np.testing.assert_array_equal(nan[1], [v for _, v in stored["nan"]])  # NaN kept: a gap in the line


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedloom.cli.runs_plot import plot_curves

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[plot\]'"):
        plot_curves([], "accuracy")
