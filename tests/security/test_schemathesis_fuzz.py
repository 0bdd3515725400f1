"""A bounded schemathesis run against a real aggregator: no input the OpenAPI spec allows (or
nearly allows) may get a 5xx answer, with a credential or without one.

schemathesis runs as its own process (its CLI, pinned in constraints-ci.txt) against
``/openapi.json`` of a ``fedloom server`` whose run has a digits-shaped model and an
open round; every request and answer is read back from its NDJSON report, so a failure
lists each operation and URL that got a server error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from security_helpers import Federation

#: test cases per operation and generation mode (positive and negative): ~470 requests a run, ~6 s.
#: A deeper hunt: FEDLOOM_FUZZ_EXAMPLES=2000 FEDLOOM_FUZZ_SEED=7 pytest tests/security/test_schemathesis_fuzz.py
MAX_EXAMPLES = int(os.environ.get("FEDLOOM_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("FEDLOOM_FUZZ_SEED", "20261201"))
#: wall-clock bound of one schemathesis run
RUN_TIMEOUT_SECONDS = 90 + MAX_EXAMPLES // 10
OPERATIONS = 11  # health, register, task, global model, lineage, initial model, updates, status, logs,
#: and the secure-aggregation relay and stage messages (/v1/secagg/relay, /v1/secagg/{stage})


def _digits_model() -> dict[str, np.ndarray]:
    return {"weight": np.zeros((10, 64), dtype=np.float32), "bias": np.zeros(10, dtype=np.float32)}


def _require_schemathesis() -> None:
    if importlib.util.find_spec("schemathesis") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("schemathesis is missing: `make test` installs it with the dev extra (constraints-ci.txt)")
    pytest.skip("schemathesis is not installed: pip install -c constraints-ci.txt -e '.[dev]'")


def _fuzz(url: str, report: Path, credential: str | None) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """Run schemathesis against ``url``; returns its process and every (operation, method, url, status) it saw."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json"]
    command += ["--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)]
    command += ["--phases", "coverage,fuzzing", "--workers", "1", "--generation-database", "none", "--no-color"]
    command += ["--request-timeout", "10", "--report", "ndjson", "--report-ndjson-path", str(report)]
    if credential is not None:
        command += ["--header", f"Authorization: Bearer {credential}"]
    try:
        # in the report's folder: schemathesis keeps a crash cache (.schemathesis/) in its working
        # directory, which would leak into the checkout and carry state from one run to the next
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False, cwd=report.parent
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"schemathesis ran past its bound of {RUN_TIMEOUT_SECONDS} s")
    return done, _interactions(report)


def _interactions(report: Path) -> list[tuple[str, str, str, int]]:
    seen: list[tuple[str, str, str, int]] = []
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        for interaction in finished["recorder"].get("interactions", {}).values():
            request, response = interaction["request"], interaction.get("response") or {}
            label = finished["recorder"]["label"]
            seen.append((label, request["method"], request["uri"], int(response.get("status_code", 0))))
    return seen


@pytest.mark.parametrize("who", ["admin agent", "no credential"])
def test_fuzzed_requests_get_no_server_error(federation: Federation, tmp_path: Path, who: str) -> None:
    _require_schemathesis()
    (admin,) = federation.open_run(initial=_digits_model())
    credential = admin.credential if who == "admin agent" else None
    done, seen = _fuzz(federation.url, tmp_path / "schemathesis.ndjson", credential)
    operations = {label for label, *_ in seen}
    ran = f"{len(seen)} requests to {sorted(operations)}"
    assert len(seen) >= 200, f"schemathesis hardly ran ({ran}):\n{done.stdout[-3000:]}"
    assert len(operations) == OPERATIONS, f"schemathesis missed operations ({ran})"
    errors = Counter(
        (method, uri.replace(federation.url, ""), status) for _, method, uri, status in seen if status >= 500
    )
    listing = "\n".join(f"  {n} x {status} {method} {path}" for (method, path, status), n in errors.most_common(30))
    assert not errors, f"{sum(errors.values())} of {len(seen)} fuzzed requests got a server error:\n{listing}"
    assert done.returncode == 0, f"schemathesis failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    # the fuzzing changed nothing an honest agent depends on
    federation.wait_out_rate_limit(admin)
    federation.finish_round([admin], weights=_digits_model())
