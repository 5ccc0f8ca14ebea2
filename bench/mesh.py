"""What the mesh costs: pass latency, throughput on gate host processes, scale, and the reference.

Each function returns raw samples; bench/__main__.py turns them into the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from bench.raw import WINDOW
from gates.host import Connections
from gates.protocol import HostPresence, host_topic
from gates.transport import BrokerAddress, read_retained
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, in_process, on_deployment, undeploy
from orchestrator.errors import RunTimeout
from orchestrator.recorder import Recorder
from orchestrator.reference import evaluate
from orchestrator.runner import Runner

QF = "(x+y)*z"
QF_INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}
NEURON = "sigmoid(w0*x0 + w1*x1 + w2)"
NEURON_INPUTS = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}


async def pass_latency(
    broker: BrokerAddress, source: str, inputs: dict[str, float], passes: int, connections: Connections = "per-gate"
) -> list[float]:
    """Seconds per sequential pass on a warm in-process deployment; every result checked."""
    circuit = compile_source(source)
    expected = evaluate(circuit, inputs)
    seconds: list[float] = []
    async with in_process(circuit, broker, connections=connections) as runner:
        for index in range(passes + 20):
            start = time.perf_counter()
            result = await runner.run(inputs)
            if index >= 20:
                seconds.append(time.perf_counter() - start)
            assert result == expected, result
    return seconds


@contextlib.contextmanager
def host_processes(url: str, count: int, connections: Connections = "shared", qos: int = 1) -> Iterator[list[str]]:
    """`count` gate host processes on the broker, with their gates' messages at `qos`; stopped on exit."""
    tag = secrets.token_hex(3)
    names = [f"bench-{tag}-{i}" for i in range(count)]
    command = [sys.executable, "-m", "gates", "--broker", url, "--log-level", "WARNING", "--connections", connections]
    command += ["--qos", str(qos)]
    command.append("--name")
    processes = [subprocess.Popen([*command, name]) for name in names]
    try:
        yield names
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=120)


async def wait_online(broker: BrokerAddress, names: list[str]) -> None:
    async with asyncio.timeout(30):
        while True:
            found = await read_retained(broker, [host_topic("+")])
            online = {p.host for p in map(HostPresence.model_validate_json, found.values()) if p.state == "online"}
            if set(names) <= online:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def deployed_on(
    broker: BrokerAddress, circuit: Circuit, hosts: list[str], recorder: Recorder | None = None
) -> AsyncIterator[Runner]:
    name = f"bench-{secrets.token_hex(3)}"
    await deploy_to_hosts(circuit, name, broker, hosts=hosts, timeout=120)
    try:
        async with on_deployment(name, broker, ready_timeout=120, recorder=recorder) as runner:
            yield runner
    finally:
        await undeploy(name, broker)


async def throughput(runner: Runner, in_flight: int, seconds: float) -> tuple[list[float], int]:
    """Messages per second through the mesh with `in_flight` runs going at all times, one sample
    per WINDOW seconds; and how many runs did not finish within 10 s (a lost message)."""
    circuit = runner.circuit
    expected = evaluate(circuit, NEURON_INPUTS)
    done = lost = 0
    running = True

    async def keep_running() -> None:
        nonlocal done, lost
        while running:
            try:
                assert await runner.run(NEURON_INPUTS, timeout=10) == expected
                done += 1
            except RunTimeout:
                lost += 1

    rates: list[float] = []
    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(keep_running())
        await asyncio.sleep(1.0)  # warm-up
        for _ in range(max(1, round(seconds / WINDOW))):
            before, start = done, time.perf_counter()
            await asyncio.sleep(WINDOW)
            rates.append((done - before) * circuit.messages_per_pass() / (time.perf_counter() - start))
        running = False
    return rates, lost


PASSES = 3
"""Passes per scale point, for a median and a spread."""


@dataclass
class ScalePoint:
    gates: int
    edges: int
    deploy_s: float
    pass_s: list[float]
    """Seconds per pass, PASSES of them one after the other."""
    rss_delta_kb: float
    """Resident memory the deployment added to the process (gates, runner, connection), before the pass."""
    peak_rss_mb: float
    """The process's peak resident memory so far, the pass included."""
    reference_s: float


def wide_circuit(gates: int) -> Circuit:
    """A layered circuit of about `gates` gates: tanh(w_i * x_i) terms summed in a balanced tree."""
    terms = max(1, (gates + 1) // 5)
    source = [f"t{i} = tanh(w{i} * x{i})" for i in range(terms)]
    level = [f"t{i}" for i in range(terms)]
    counter = 0
    while len(level) > 1:
        paired = []
        for a, b in zip(level[0::2], level[1::2], strict=False):
            counter += 1
            source.append(f"s{counter} = {a} + {b}")
            paired.append(f"s{counter}")
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    source.append(f"f = sigmoid({level[0]})")
    return compile_source("\n".join(source), name=f"wide{gates}")


async def scale_point(broker: BrokerAddress, circuit: Circuit, connections: Connections = "shared") -> ScalePoint:
    """Deploy in this process, PASSES passes, memory per gate above the process before, reference time."""
    inputs = {name: 0.001 * (i % 97) - 0.05 for i, name in enumerate(circuit.inputs)}
    before = _rss_kb()
    start = time.perf_counter()
    async with in_process(circuit, broker, ready_timeout=600, connections=connections) as runner:
        deploy_s = time.perf_counter() - start
        rss = _rss_kb() - before
        pass_s, results = [], []
        for _ in range(PASSES):
            start = time.perf_counter()
            results.append(await runner.run(inputs, timeout=600))
            pass_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    expected = evaluate(circuit, inputs)
    reference_s = time.perf_counter() - start
    assert all(result == expected for result in results)
    edges = sum(len(g.inputs) for g in circuit.gates)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ScalePoint(len(circuit.gates), edges, deploy_s, pass_s, rss, peak_mb, reference_s)


def _rss_kb() -> float:
    """Current resident set size in KB (from /proc; falls back to the peak)."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
