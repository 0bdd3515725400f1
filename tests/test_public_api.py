import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import fedloom


def test_public_api_is_curated():
    assert sorted(fedloom.__all__) == sorted(
        [
            "ClientSampler",
            "ClientUpdate",
            "Environment",
            "Evaluation",
            "Recording",
            "EvalConfig",
            "FedloomError",
            "FitConfig",
            "FitResult",
            "NumpyLogisticTrainer",
            "RoundCriteria",
            "SimulationResult",
            "Strategy",
            "TorchTrainer",
            "Trainer",
            "Weights",
            "__version__",
            "fedavg",
            "from_bytes",
            "simulate",
            "to_bytes",
        ]
    )
    for name in fedloom.__all__:
        assert getattr(fedloom, name) is not None


def test_import_does_not_pull_torch():
    code = "import sys, fedloom, fedloom.sim.tasks, fedloom.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# The layering of DESIGN.md: which fedloom packages each package may import (directly, at any depth).
ALLOWED_IMPORTS = {
    "core": set(),
    "algorithms": {"core"},
    "client": {"core", "algorithms"},
    "server": {"core", "algorithms"},
    "store": {"core"},
    "data": {"core"},
    "models": {"core"},
    "light": set(),  # fedloom.light runs on devices with NumPy only (tests/light/test_isolation.py)
    "dashboard": {"core", "algorithms", "server", "store"},
}


def _fedloom_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedloom."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fedloom."):
                    yield alias.name.split(".")[1]


def test_dependencies_point_downwards_only():
    root = Path(fedloom.__file__).parent
    violations = []
    for package, allowed in ALLOWED_IMPORTS.items():
        for file in (root / package).rglob("*.py"):
            bad = {m for m in _fedloom_imports(file) if m != package and m not in allowed}
            violations += [f"{file.relative_to(root)} imports fedloom.{m}" for m in sorted(bad)]
    assert violations == []


CURATED = ["core", "algorithms", "client", "server", "store", "sim", "data", "models"]


@pytest.mark.parametrize("package", CURATED)
def test_every_subpackage_curates_its_api(package):
    module = importlib.import_module(f"fedloom.{package}")
    names = getattr(module, "__all__", None)
    assert names, f"fedloom.{package} has no __all__"
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(module, name) is not None, f"fedloom.{package}.{name}"


def _imported_names(path):
    """(module, name) for every ``from fedloom... import name`` in a file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedloom"):
            for alias in node.names:
                yield node.module, alias.name


def test_examples_import_only_public_names():
    examples = Path(__file__).resolve().parents[1] / "examples"
    private = []
    for file in sorted(examples.glob("*.py")):
        for module, name in _imported_names(file):
            public = importlib.import_module(module).__dict__.get("__all__", ())
            if module.count(".") > 1 or name not in public:
                private.append(f"{file.name}: from {module} import {name}")
    assert private == []


def test_no_file_over_400_lines_and_no_function_over_50():
    root = Path(fedloom.__file__).parent
    too_long = []
    for file in sorted(root.rglob("*.py")):
        text = file.read_text()
        if text.count("\n") > 400:
            too_long.append(f"{file.relative_to(root)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 50:
                    too_long.append(f"{file.relative_to(root)}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []
