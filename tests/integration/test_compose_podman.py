"""The docker-compose demo under a real container engine: rootful podman and podman-compose.

The project's docker-compose.yml and Dockerfile run unchanged. What these machines need lives in
tests/containers: the stand-ins for the base images (no registry is reachable: they are made
from Debian's archive, see standins.py) and podman's settings (containers.conf, given through
CONTAINERS_CONF). The base images stay cached in podman's storage; everything a test starts
(containers, networks, pods, volumes, the project's image) is removed again, pass or fail.

Needs root, podman, runc and debootstrap (apt) and podman-compose (the dev extra). Deselect with
`-m "not containers"`.

1. `podman-compose up --abort-on-container-exit --exit-code-from orchestrator`, as the README
   says: the demo ends by itself, prints the CS231n neuron's value and gradients, and its three
   gate replicas were online, each under its container's name.
2. With the gate hosts up (and no orchestrator), a deployment, one gate container killed: a run
   on the deployment fails naming that host and its gates as the CLI does, and a redeploy onto
   the two survivors gives the neuron's numbers again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gates.host import default_name
from tests.containers.standins import ensure_standins, podman, podman_env

pytestmark = [pytest.mark.integration, pytest.mark.containers]

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
PROJECT_IMAGE = COMPOSE["services"]["gates"]["image"]
BROKER = "mqtt://broker:1883"

# The CS231n notes' neuron: f = sigmoid(w0*x0 + w1*x1 + w2) at w = [2, -3, -3], x = [-1, -2].
SOURCE = "sigmoid(w0*x0 + w1*x1 + w2)"
INPUTS = ["w0=2", "x0=-1", "w1=-3", "x1=-2", "w2=-3"]
VALUE = 0.7310585786300049  # sigmoid(1)
GRADS = {
    "w0": -0.19661193324148185,  # x0 * (1 - f) * f
    "x0": 0.3932238664829637,  # w0 * (1 - f) * f
    "w1": -0.3932238664829637,
    "x1": -0.5898357997244456,
    "w2": 0.19661193324148185,
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Compose:
    """podman-compose on the project's compose file, as one project of its own."""

    def __init__(self) -> None:
        self.project = f"gatemesh-test-{secrets.token_hex(3)}"

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "podman_compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        return subprocess.run(
            command, cwd=ROOT, env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def gatemesh(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `gatemesh` command in a one-off container of the orchestrator service, on the project's network."""
        return self("run", "-T", "--rm", "--no-deps", "orchestrator", "gatemesh", *args, "--broker", BROKER)

    def containers(self, service: str) -> list[str]:
        label = "io.podman.compose"
        names = podman(
            "ps", "-a", "--filter", f"label={label}.project={self.project}", "--filter",
            f"label={label}.service={service}", "--format", "{{.Names}}",
        )  # fmt: skip
        return sorted(names.split())

    def host_name(self, container: str) -> str:
        """The name a gate host in this container gives itself: its hostname, and it is pid 1."""
        return default_name(podman("inspect", "--format", "{{.Config.Hostname}}", container).strip(), 1)

    def leftovers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        found = podman("ps", "-a", "--filter", label, "--format", "container {{.Names}}").split("\n")
        found += podman("network", "ls", "--filter", label, "--format", "network {{.Name}}").split("\n")
        found += podman("volume", "ls", "--filter", label, "--format", "volume {{.Name}}").split("\n")
        found += podman("pod", "ls", "--filter", f"name=pod_{self.project}", "--format", "pod {{.Name}}").split("\n")
        return [line for line in found if line]

    def down(self) -> None:
        """`down`, then whatever it left (if anything), so that a failed test leaves nothing either."""
        self("down", "-v", "-t", "2")
        label = f"label=io.podman.compose.project={self.project}"
        for kind, which in [
            ("container", ["-a", "--filter", label]),
            ("pod", ["--filter", f"name=pod_{self.project}"]),
            ("network", ["--filter", label]),
            ("volume", ["--filter", label]),
        ]:
            for leftover in podman(kind, "ls", "-q", *which, check=False).split():
                podman(kind, "rm", "-f", leftover, check=False)


@pytest.fixture(scope="module")
def engine() -> Iterator[list[str]]:
    """The stand-in base images and the project's image, built from this checkout by the compose file."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            f"the container test needs root and apt's podman, runc, debootstrap (missing: {missing or 'root'}); "
            'deselect it with -m "not containers"'
        )
    log = ensure_standins()
    print("\n".join(log))  # what had to be built (nothing, when the cache is warm)
    # podman-compose 1.6 builds once per replica when `up` builds; building the service once first avoids it
    built = Compose()("build", "gates", timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        yield log
    finally:
        podman("rmi", "-f", PROJECT_IMAGE, check=False)


@pytest.fixture
def compose(engine: list[str]) -> Iterator[Compose]:
    project = Compose()
    try:
        yield project
    finally:
        project.down()
        assert project.leftovers() == []


def by_service(output: str) -> dict[str, list[str]]:
    """podman-compose's interleaved `[service] | line` output, as each service's lines."""
    lines: dict[str, list[str]] = {}
    for line in ANSI.sub("", output).splitlines():
        found = re.match(r"^\[(\w+)\]\s*\| ?(.*)$", line)
        if found:
            lines.setdefault(found.group(1), []).append(found.group(2))
    return lines


def test_the_demo_runs_and_ends(compose: Compose) -> None:
    done = compose("up", "--abort-on-container-exit", "--exit-code-from", "orchestrator", timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    services = by_service(done.stdout + done.stderr)
    printed = "\n".join(services["orchestrator"])

    value = re.search(r"^value = ([-0-9.e]+)$", printed, re.M)
    assert value is not None, printed
    rows = dict(re.findall(r"^\s*(w0|x0|w1|x1|w2)\s+│\s+([-0-9.e]+)\s*$", printed, re.M))
    assert float(value.group(1)) == pytest.approx(VALUE, abs=1e-10)  # the table shows 10 digits
    assert {name: float(grad) for name, grad in rows.items()} == pytest.approx(GRADS, abs=1e-10)

    # All three replicas were online, each under its container's name, and each ran gates of the pass.
    containers = compose.containers("gates")
    assert len(containers) == COMPOSE["services"]["gates"]["deploy"]["replicas"] == 3
    names = {compose.host_name(container) for container in containers}
    assert len(names) == 3
    logged = "\n".join(services["gates"])
    online = {m.group(1) for m in re.finditer(r"host (\S+) \(incarnation \w+\) online at", logged)}
    assert online == names
    explained = re.findall(r"^\s*\d+\. (\S+)\s+\| ", printed, re.M)
    assert len(explained) == 30  # --explain: every message of the pass, with its sender's host
    assert set(explained) == names | {"orchestrator"}


def test_a_killed_gate_container_is_named_and_the_survivors_take_over(compose: Compose) -> None:
    up = compose("up", "-d", "gates")  # the broker and the three gate hosts; no orchestrator
    assert up.returncode == 0, up.stderr[-3000:]
    deployed = compose.gatemesh("deploy", SOURCE, "--name", "neuron", "--hosts", "3", "--timeout", "60")
    assert deployed.returncode == 0, deployed.stderr
    assert re.search(r"10 gates on 3 host\(s\)", deployed.stdout), deployed.stdout
    assert run_numbers(compose) == (VALUE, GRADS)

    status = cluster(compose)["deployments"]["neuron"]
    victim, *survivors = compose.containers("gates")
    lost = compose.host_name(victim)
    gates_lost = [gate for gate, where in status["gates"].items() if where["host"] == lost]
    assert gates_lost, status  # round-robin over three hosts gives each of them gates
    podman("kill", victim)

    broken = compose.gatemesh("run", "--deployed", "neuron", *INPUTS, "--timeout", "30")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    message = (
        f"host {lost} went offline (connection lost); its {len(gates_lost)} gate(s) {', '.join(gates_lost)} "
        "are unreachable; redeploy with `gatemesh deploy` onto live hosts"
    )
    assert re.search(rf"^error: (run \w+: )?{re.escape(message)}$", broken.stderr, re.M), broken.stderr
    assert cluster(compose)["hosts"][lost]["state"] == "offline"

    alive = [compose.host_name(container) for container in survivors]
    redeployed = compose.gatemesh("deploy", SOURCE, "--name", "neuron", "--hosts", ",".join(alive), "--timeout", "60")
    assert redeployed.returncode == 0, redeployed.stderr
    placed = {where["host"] for where in cluster(compose)["deployments"]["neuron"]["gates"].values()}
    assert placed == set(alive)
    assert run_numbers(compose) == (VALUE, GRADS)


def run_numbers(compose: Compose) -> tuple[float, dict[str, float]]:
    """One run on the deployment, as the exact floats it reports (--json)."""
    done = compose.gatemesh("run", "--deployed", "neuron", *INPUTS, "--json", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return result["value"], result["grads"]


def cluster(compose: Compose) -> dict[str, Any]:
    done = compose.gatemesh("status", "--json")
    assert done.returncode == 0, done.stderr
    state: dict[str, Any] = json.loads(done.stdout)
    return state
