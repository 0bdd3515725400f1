"""load_trainer_factory: module and file specs, trainer args, and every error message."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from fedloom.client.loading import check_trainer, load_trainer_factory, parse_trainer_args
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.core.errors import ConfigError

SITE_CODE = """
import numpy as np
from fedloom.client.numpy_logreg import NumpyLogisticTrainer

CALLS = []

def make_trainer(site="0", scale="1"):
    CALLS.append((site, scale))
    x = np.full((4, 2), float(scale), dtype=np.float32)
    return NumpyLogisticTrainer(x, np.array([0, 1, 0, 1]), 2)

def no_args():
    return make_trainer()

def not_a_trainer():
    return {"weights": 1}

class Factories:
    @staticmethod
    def nested():
        return make_trainer()

NOT_CALLABLE = 42
"""


@pytest.fixture
def site_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``my_site.py`` in a folder on sys.path (forgotten again after the test)."""
    path = tmp_path / "my_site.py"
    path.write_text(SITE_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_site", raising=False)
    yield path
    sys.modules.pop("my_site", None)


def test_module_spec_with_trainer_args(site_module: Path) -> None:
    factory = load_trainer_factory("my_site:make_trainer", {"site": "2", "scale": "3"})
    trainer = factory()
    assert isinstance(trainer, NumpyLogisticTrainer)
    assert float(trainer.x[0, 0]) == 3.0
    assert sys.modules["my_site"].CALLS == [("2", "3")]


def test_module_spec_without_args_and_nested_attribute(site_module: Path) -> None:
    assert isinstance(load_trainer_factory("my_site:no_args")(), NumpyLogisticTrainer)
    assert isinstance(load_trainer_factory("my_site:Factories.nested")(), NumpyLogisticTrainer)


def test_file_path_spec(tmp_path: Path) -> None:
    folder = tmp_path / "site code"
    folder.mkdir()
    (folder / "helper_for_site.py").write_text("SCALE = '5'\n")
    (folder / "site.py").write_text(
        SITE_CODE + "\nfrom helper_for_site import SCALE\n\ndef uses_helper():\n    return make_trainer(scale=SCALE)\n"
    )
    trainer = load_trainer_factory(f"{folder}/site.py:uses_helper")()
    assert float(trainer.x[0, 0]) == 5.0  # imported its neighbour module
    sys.modules.pop("helper_for_site", None)


def test_the_current_directory_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd_site_module.py").write_text(SITE_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert isinstance(load_trainer_factory("cwd_site_module:no_args")(), NumpyLogisticTrainer)
    finally:
        sys.modules.pop("cwd_site_module", None)


@pytest.mark.parametrize("spec", ["my_site", "my_site:", ":make_trainer", ""])
def test_malformed_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="must look like 'module:factory'"):
        load_trainer_factory(spec)


def test_missing_module() -> None:
    with pytest.raises(ConfigError, match="no module named 'surely_not_a_module_xyz'"):
        load_trainer_factory("surely_not_a_module_xyz:make")


def test_missing_dependency_of_the_module_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site_needing_dep.py").write_text("import some_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing 'site_needing_dep' failed: No module named 'some_missing_dep"):
        load_trainer_factory("site_needing_dep:make")


def test_module_raising_at_import(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('data folder /secure/x not mounted')\n")
    with pytest.raises(ConfigError, match="RuntimeError: data folder /secure/x not mounted"):
        load_trainer_factory(f"{tmp_path}/broken.py:make")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"file 'no/such/site\.py' does not exist"):
        load_trainer_factory("no/such/site.py:make_trainer")


def test_missing_attribute(site_module: Path) -> None:
    with pytest.raises(ConfigError, match="has no attribute 'make_trainerr'"):
        load_trainer_factory("my_site:make_trainerr")


def test_not_callable(site_module: Path) -> None:
    with pytest.raises(ConfigError, match="'NOT_CALLABLE' is a int, not a callable factory"):
        load_trainer_factory("my_site:NOT_CALLABLE")


def test_returned_object_is_not_a_trainer(site_module: Path) -> None:
    factory = load_trainer_factory("my_site:not_a_trainer")
    with pytest.raises(
        ConfigError, match="returned a dict, which is not a Trainer: it lacks get_weights, fit, evaluate"
    ):
        factory()


def test_trainer_args_the_factory_does_not_take(site_module: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be called with sites=.*--trainer-arg"):
        load_trainer_factory("my_site:make_trainer", {"sites": "3"})
    with pytest.raises(ConfigError, match="cannot be called with site="):
        load_trainer_factory("my_site:no_args", {"site": "1"})


def test_parse_trainer_args() -> None:
    assert parse_trainer_args(["site=1", "path=/data/a=b", "empty="]) == {"site": "1", "path": "/data/a=b", "empty": ""}
    with pytest.raises(ConfigError, match="key=value"):
        parse_trainer_args(["site"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_trainer_args(["not-an-identifier=1"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_trainer_args(["a=1", "a=2"])


def test_check_trainer_names_what_is_missing() -> None:
    class HalfTrainer:
        def get_weights(self) -> dict[str, object]:
            return {}

        fit = None

    with pytest.raises(ConfigError, match="lacks fit, evaluate"):
        check_trainer(HalfTrainer())


def test_a_dataclass_in_a_file_spec_works(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from dataclasses import dataclass
        import numpy as np
        from fedloom.client.numpy_logreg import NumpyLogisticTrainer

        @dataclass
        class Settings:
            scale: float = 2.0

        def make():
            x = np.full((2, 2), Settings().scale, dtype=np.float32)
            return NumpyLogisticTrainer(x, np.array([0, 1]), 2)
        """
    )
    (tmp_path / "dc_site.py").write_text(code)
    assert float(load_trainer_factory(f"{tmp_path}/dc_site.py:make")().x[0, 0]) == 2.0
