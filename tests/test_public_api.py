import ast
import subprocess
import sys
from pathlib import Path

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
