"""Issue 12, containers: ``deploy/`` holds an aggregator and an agent Dockerfile and a compose file
(PostgreSQL, MinIO, two aggregators, four agents). There is no Docker daemon on the CI machine,
so what can be checked without one is checked for real here:

* ``docker-compose config`` (Debian's docker-compose, installed by ``make test``) accepts the file;
* every ``fedloom`` command in it parses with fedloom's own CLI, every aggregator's config file and
  environment load into a valid :class:`AggregatorConfig`, every trainer exists and takes its
  ``--trainer-arg`` values;
* the token job's shell script, run by ``sh`` against a real store, writes one token per site;
* every file a Dockerfile copies exists and is not excluded by ``.dockerignore``, every extra it
  installs exists in ``pyproject.toml``, its entry point is fedloom's console script.

Building the images and starting the stack needs a daemon; docs/deployment.md says so.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fedloom.cli.main import build_parser
from fedloom.client.aggregator_choice import rendezvous_order
from fedloom.client.loading import load_trainer_factory, parse_trainer_args
from fedloom.server.config import load_config
from fedloom.store import SqlStore

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
#: where the images put the repository's files
IMAGE_ROOT = "/opt/fedloom"


def compose_config() -> dict:
    """The compose file as Docker Compose resolves it (anchors merged, variables filled)."""
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: `make test` installs Debian's docker-compose")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    done = subprocess.run([tool, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def services() -> dict:
    return compose_config()["services"]


def test_the_stack_has_the_production_layout(services):
    assert {"postgres", "s3", "bucket", "tokens", "aggregator-a1", "aggregator-a2"} <= set(services)
    agents = [name for name in services if name.startswith("site-")]
    assert len(agents) == 4
    for name in ("aggregator-a1", "aggregator-a2"):
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["bucket"]["condition"] == needs["tokens"]["condition"] == "service_completed_successfully"


def test_each_aggregator_config_loads_with_its_environment(services):
    clusters = set()
    for name in ("aggregator-a1", "aggregator-a2"):
        service = services[name]
        args = build_parser().parse_args(service["command"])
        assert args.command == "server"
        mounts = dict(volume.split(":")[:2] for volume in service["volumes"])
        local = next(src for src, dst in mounts.items() if dst == args.config)
        config = load_config(local, environ=service["environment"])
        assert config.server.db_url.startswith("postgresql+psycopg://fedloom:")
        assert config.server.blob_url == "s3://fedloom-models/compose-demo"
        assert config.federation.clusters == ("a1", "a2")
        clusters.add(config.federation.cluster)
    assert clusters == {"a1", "a2"}  # one federation, each aggregator its own cluster


def test_every_agent_command_parses_and_its_trainer_exists(services):
    image = (DEPLOY / "agent.Dockerfile").read_text(encoding="utf-8")
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", image, re.M).group(1))
    assert entry[:2] == ["fedloom", "agent"]
    first_choices: list[str] = []
    for name, service in services.items():
        if not name.startswith("site-"):
            continue
        args = build_parser().parse_args([*entry[1:], *service["command"]])
        assert args.name == name and args.token_file == f"/home/fedloom/tokens/{name}"
        for url in args.servers:
            aggregator = url.split("//")[1].split(":")[0]
            assert aggregator in services, f"{name} points at {aggregator}, which is not a service"
        if args.upload_initial:
            first_choices.append(rendezvous_order(name, args.servers)[0])
        path, _, function = args.trainer.rpartition(":")
        local = ROOT / Path(path).relative_to(IMAGE_ROOT)
        factory = load_trainer_factory(f"{local}:{function}", parse_trainer_args(args.trainer_arg))
        assert factory().get_weights()  # the site's data loads and its model exists
    # each cluster's run gets its initial model from the admin site whose first choice it is
    assert sorted(first_choices) == ["http://aggregator-a1:8080", "http://aggregator-a2:8080"]


def test_the_token_job_writes_one_private_token_per_site(services, tmp_path):
    job = services["tokens"]
    script = job["command"][0].replace("$$", "$")  # what the container's shell receives
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    db = f"sqlite:///{tmp_path / 'fedloom.db'}"
    env = {**os.environ, **job["environment"], "FEDLOOM_SERVER_DB_URL": db}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the venv's fedloom script
    for _ in range(2):  # a second start of the stack keeps the tokens it made
        command = ["sh", "-c", script.replace("/home/fedloom/tokens", str(tokens))]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tokens.iterdir()) == ["site-0", "site-1", "site-2", "site-3"]
    store = SqlStore(db)
    try:
        roles = {t.name: t.role for t in store.list_tokens()}
        assert roles == {"site-0": "admin", "site-1": "admin", "site-2": "agent", "site-3": "agent"}
        for path in tokens.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600
            assert store.verify_join_token(path.read_text(encoding="utf-8").strip()) is not None
    finally:
        store.close()


def dockerignored(relative: str) -> bool:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return any(fnmatch.fnmatch(relative, p) or relative.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize("dockerfile", ["aggregator.Dockerfile", "agent.Dockerfile"])
def test_every_dockerfile_copies_what_exists_and_installs_known_extras(dockerfile):
    text = (DEPLOY / dockerfile).read_text(encoding="utf-8")
    assert re.search(r"^USER fedloom$", text, re.M), "the image must not run as root"
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the repository"
            assert not dockerignored(source), f"{dockerfile} copies {source}, which .dockerignore leaves out"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    installs = re.findall(r"\.\[([^\]]+)\]", text)
    assert installs, f"{dockerfile} installs no fedloom extras"
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for group in installs:
        for extra in group.replace("${EXTRAS}", defaults.get("EXTRAS", "")).split(","):
            assert extra in extras, f"{dockerfile} installs extra {extra!r}, which pyproject.toml lacks"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))[0] in scripts
