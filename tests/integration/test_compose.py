"""The docker-compose demo, proven without a container engine (test_compose_podman.py runs it in one).

1. docker-compose.yml is valid against the Compose Specification's JSON schema (vendored in
   tests/data/compose-spec.json, as shipped in docker-compose 1.29.2 on PyPI), and every
   command in it is a command this project has, with options its parsers accept.
2. The same topology runs as plain processes: a Mosquitto with the project's config, as many
   `python -m gates` processes as the compose file asks replicas, and the orchestrator's
   command; the printed value and gradients are the CS231n neuron's.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from broker.launch import mosquitto
from gates.__main__ import parser as gates_parser
from orchestrator.cli import app
from tests.processes import GateHostProcess, gatemesh

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCHEMA = json.loads((ROOT / "tests/data/compose-spec.json").read_text())
COMPOSE_BROKER = "mqtt://broker:1883"


def command(service: str) -> list[str]:
    argv = COMPOSE["services"][service]["command"]
    assert isinstance(argv, list), f"{service}: write the command as a list, so no shell is involved"
    return [str(part) for part in argv]


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft201909Validator(SCHEMA).iter_errors(COMPOSE), key=str)
    assert errors == [], [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_the_schema_check_can_fail() -> None:
    broken: dict[str, Any] = {"services": {"gates": {"image": "x", "deploy": {"replicas": "three"}, "bogus": 1}}}
    assert list(jsonschema.Draft201909Validator(SCHEMA).iter_errors(broken))


def test_compose_topology_is_the_one_the_demo_needs() -> None:
    services = COMPOSE["services"]
    assert services["broker"]["image"] == "docker.io/library/eclipse-mosquitto:2"
    assert "./broker/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro,z" in services["broker"]["volumes"]
    assert (ROOT / "broker/mosquitto.conf").exists()
    assert services["gates"]["deploy"] == {"mode": "replicated", "replicas": 3}  # podman-compose needs the mode
    assert services["gates"]["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert COMPOSE_BROKER in command("gates")
    assert COMPOSE_BROKER in command("orchestrator")


def test_compose_file_ends_and_stays_private() -> None:
    """Built once, no port on the host, started in order, and nothing restarts forever."""
    services = COMPOSE["services"]
    assert [name for name, service in services.items() if "build" in service] == ["gates"]
    assert services["orchestrator"]["image"] == services["gates"]["image"]
    assert all("ports" not in service for service in services.values())
    assert services["broker"]["healthcheck"]["test"][:2] == ["CMD", "mosquitto_pub"]
    assert services["gates"]["depends_on"] == {"broker": {"condition": "service_healthy"}}
    assert services["orchestrator"]["depends_on"]["broker"] == {"condition": "service_healthy"}
    for name, service in services.items():  # a demo that fails must end, not retry forever
        assert service.get("restart", "no") == "no" or re.fullmatch(r"on-failure:\d+", service["restart"]), name


def test_the_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """So that a change to the code reinstalls none of them (the layer stays cached)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    dependencies = next(
        i for i, line in enumerate(lines) if "pip install" in line and "-r /tmp/requirements.txt" in line
    )
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    code = [i for i, line in enumerate(lines) if re.match(r"COPY \w+ \w+$", line)]
    assert sorted(lines[i].split()[1] for i in code) == sorted(packages), "the image needs every package"
    assert dependencies < min(code)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    let_in = ignored[ignored.index("*") + 1 :]
    assert {"!pyproject.toml", "!README.md", *(f"!{name}" for name in packages)} <= set(let_in)


def test_every_command_is_one_this_project_has() -> None:
    gates = command("gates")
    assert gates[:3] == ["python", "-m", "gates"]
    gates_parser().parse_args(gates[3:])  # argparse exits on an unknown option

    orchestrator = command("orchestrator")
    assert orchestrator[0] == "gatemesh"
    # With --help last, the CLI parses every option before printing help: an unknown command
    # or option fails with a usage error (exit 2) instead.
    cli = CliRunner()
    checked = cli.invoke(app, [*orchestrator[1:], "--help"])
    assert checked.exit_code == 0, checked.output
    assert "Usage: " in checked.output
    assert cli.invoke(app, [*orchestrator[1:], "--no-such-option", "--help"]).exit_code == 2
    assert cli.invoke(app, ["no-such-command", "--help"]).exit_code == 2


def test_the_compose_topology_as_processes() -> None:
    replicas = COMPOSE["services"]["gates"]["deploy"]["replicas"]
    with mosquitto() as url:  # the broker service: the project's config, a port of its own
        argv = [url if part == COMPOSE_BROKER else part for part in command("gates")[3:]]
        hosts = [GateHostProcess(url, None, argv=argv) for _ in range(replicas)]
        try:
            for host in hosts:
                host.wait_online()
            orchestrator = [url if part == COMPOSE_BROKER else part for part in command("orchestrator")[1:]]
            done = gatemesh(*orchestrator, timeout=120)
        finally:
            for host in hosts:
                host.stop()
    assert done.returncode == 0, done.stderr
    value = float(re.search(r"value = ([-0-9.e]+)", done.stdout).group(1))  # type: ignore[union-attr]
    rows = re.finditer(r"^\s*(w0|x0|w1|x1|w2)\s+\S\s+([-0-9.e]+)", done.stdout, re.M)
    grads = {m.group(1): float(m.group(2)) for m in rows}
    # The notes' neuron: w = [2, -3, -3], x = [-1, -2]; f = sigmoid(1); df/d(dot) = (1 - f) f.
    f = 1 / (1 + math.exp(-1.0))
    local = (1 - f) * f
    expected = {"w0": -1 * local, "x0": 2 * local, "w1": -2 * local, "x1": -3 * local, "w2": local}
    assert value == pytest.approx(f, abs=1e-10)
    assert grads == pytest.approx(expected, abs=1e-10)
    assert done.stdout.count("| ") == 30  # --explain: all 30 messages of the pass, each with its host
