"""Gate hosts on separate network stacks: Linux network namespaces joined by veth pairs.

Each host runs inside a namespace of its own, whose only way out is a veth pair to the root
namespace (where Mosquitto listens), so every message a gate sends or receives crosses a
real network interface. The circuit's results must be exactly those of the same circuit
run with every gate in one process.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.launch import mosquitto
from orchestrator.api import run_circuit
from orchestrator.compiler import compile_source
from orchestrator.reference import evaluate
from tests.processes import GateHostProcess, gatemesh
from tests.unit.test_reference import NEURON

pytestmark = pytest.mark.integration


@dataclass
class Namespace:
    name: str
    outside: str
    """The veth end in the root namespace: its address is the broker's address for this host."""
    outside_ip: str

    def rx_bytes(self) -> int:
        return int(Path(f"/sys/class/net/{self.outside}/statistics/rx_bytes").read_text())


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def free_subnet() -> int:
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout
    for _ in range(100):
        second = random.randint(100, 250)
        if f"10.{second}." not in routes:
            return second
    pytest.fail("no free 10.x.0.0/16 subnet for the test namespaces")


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    tag = secrets.token_hex(2)
    try:
        ip("netns", "add", f"gm{tag}probe")
        ip("netns", "del", f"gm{tag}probe")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.fail(  # a missing capability fails, as a missing tool would: CI never skips it
            f"this machine does not allow network namespaces (ip netns add: {detail}): the test needs root "
            "(or CAP_NET_ADMIN), as CI has; leave it out while iterating with -k 'not netns'"
        )
    second = free_subnet()
    made: list[Namespace] = []
    try:
        for i in range(3):
            ns, outside, inside = f"gm{tag}{i}", f"gm{tag}o{i}", f"gm{tag}i{i}"
            ip("netns", "add", ns)
            made.append(Namespace(ns, outside, f"10.{second}.{i}.1"))
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", ns)
            ip("addr", "add", f"10.{second}.{i}.1/24", "dev", outside)
            ip("link", "set", outside, "up")
            ip("-n", ns, "addr", "add", f"10.{second}.{i}.2/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for namespace in made:
            subprocess.run(["ip", "netns", "del", namespace.name], check=False, capture_output=True)
            subprocess.run(["ip", "link", "del", namespace.outside], check=False, capture_output=True)


def test_hosts_in_separate_network_namespaces_give_the_in_process_results(namespaces: list[Namespace]) -> None:
    source = "q = w0*x0 + w1*x1 + w2; f = 1 / (1 + exp(-q))"
    circuit = compile_source(source)
    with mosquitto(host="0.0.0.0") as url:  # reachable from the root side of every veth pair
        port = url.rsplit(":", 1)[1]
        local = f"mqtt://127.0.0.1:{port}"
        hosts = [
            GateHostProcess(f"mqtt://{ns.outside_ip}:{port}", f"ns-host-{i}", netns=ns.name)
            for i, ns in enumerate(namespaces)
        ]
        try:
            for host in hosts:
                host.wait_online()
            name = f"netns-{secrets.token_hex(3)}"
            done = gatemesh("deploy", source, "--name", name, "--hosts", "3", "--broker", local)
            assert done.returncode == 0, done.stderr
            before = [ns.rx_bytes() for ns in namespaces]
            runs = [NEURON, {k: v * 0.5 - 1 for k, v in NEURON.items()}, {k: v + 0.25 for k, v in NEURON.items()}]
            spread = []
            for inputs in runs:
                args = [f"{k}={v!r}" for k, v in inputs.items()]
                done = gatemesh("run", "--deployed", name, *args, "--json", "--broker", local)
                assert done.returncode == 0, done.stderr
                spread.append(json.loads(done.stdout))
            after = [ns.rx_bytes() for ns in namespaces]
            one_process = [asyncio.run(run_circuit(circuit, inputs, broker=local)) for inputs in runs]

            # Cut the first host's cable: no socket closes, so only the MQTT keepalive can tell.
            # The broker gives up on the silent host after 1.5 x its 6 s keepalive and sends its
            # last will; the run in flight must fail then, naming the host, well within its timeout.
            ip("link", "set", namespaces[0].outside, "down")
            args = [f"{k}={v!r}" for k, v in NEURON.items()]
            started = time.monotonic()
            cut = gatemesh("run", "--deployed", name, *args, "--timeout", "20", "--broker", local)
            took = time.monotonic() - started
        finally:
            for host in hosts:
                host.stop()
    for inputs, across, alone in zip(runs, spread, one_process, strict=True):
        assert across == alone.model_dump()  # bit for bit: same floats through JSON both ways
        assert across == evaluate(circuit, inputs).model_dump()
    # every namespace's gates sent their messages out through its veth interface
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert cut.returncode == 1
    assert f"host {hosts[0].name} went offline (connection lost)" in cut.stderr
    print(f"partitioned host seen lost after {took:.1f} s (CLI start-up included)")
    assert took < 20, took  # the host's loss, not the run's timeout, ended the run
