"""A 65,000-gate deployment on gate host processes, end to end, through the CLI: `python -m bench.hosts --big`.

Starts a Mosquitto (the project's config: max_packet_size 2,000,000 bytes) and `--hosts`
`python -m gates` processes, then, each step timed and checked:

1. `gatemesh deploy CIRCUIT.json --name ... --hosts ...` of the MLP (64,932 gates; or a wide
   circuit of N gates with `--big N`): the record goes out in parts (orchestrator/records.py);
2. the record read back (`deploy.find`): every part present, the same circuit and placement;
3. passes on the deployment from this process (`on_deployment`), then one
   `gatemesh run --deployed NAME w=... --json` with every input on the command line, every
   result equal to orchestrator/reference.py's;
4. with `--page`: `gatemesh serve --broker URL` attached to the deployment, a pass run through
   its WebSocket as the page's "Run on it" does, every input given; meanwhile a compile request
   every 0.3 s, whose answer time says whether the server stays responsive;
5. `gatemesh undeploy NAME`, then until nothing of the deployment is retained any more;
6. each host's resident memory (VmRSS) idle, deployed, after the passes (and its peak, VmHWM),
   and after the undeploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from bench import mesh
from bench.mlp import mlp_circuit
from broker.launch import mosquitto
from gates.protocol import HostPresence, deployment_topic, host_topic
from gates.transport import BrokerAddress, read_retained
from orchestrator.circuit import Circuit
from orchestrator.deploy import find, on_deployment
from orchestrator.records import part_topic
from orchestrator.reference import evaluate
from orchestrator.result import RunResult

TIMEOUT = 900.0
"""Seconds any one step may take (deploying 65,000 gates on two busy cores takes about a minute)."""


def gatemesh(*args: str) -> tuple[float, str]:
    """Run the CLI (`python -m orchestrator`); its wall time and stdout. Fails loudly."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"gatemesh {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


async def host_pids(broker: BrokerAddress, names: list[str]) -> dict[str, int]:
    found = await read_retained(broker, [host_topic(name) for name in names])
    presences = {name: HostPresence.model_validate_json(found[host_topic(name)]) for name in names}
    return {name: p.pid for name, p in presences.items() if p.pid is not None}


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = float(value.split()[0]) / 1024
    return fields


def rss(pids: dict[str, int], key: str = "VmRSS") -> str:
    return ", ".join(f"{memory_mb(pid)[key]:.0f}" for pid in pids.values()) + " MB"


async def retained_left(broker: BrokerAddress, name: str, circuit_id: str, wait: float) -> dict[str, bytes]:
    """What the deployment still retains once the hosts have stopped its gates (or after `wait` s)."""
    filters = [deployment_topic(name), part_topic(name, "+"), f"gatemesh/{circuit_id}/#"]
    deadline = time.monotonic() + wait
    while True:
        left = await read_retained(broker, filters)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


def inputs_for(circuit: Circuit) -> dict[str, float]:
    return {name: round(0.37 * ((i * 7919) % 23) / 23 - 0.17, 4) for i, name in enumerate(circuit.inputs)}


@contextlib.contextmanager
def serving(url: str) -> Iterator[tuple[str, int]]:
    """`gatemesh serve --broker URL --port 0`: its page's URL and its pid; stopped on exit. Its
    output goes to a file: a pipe nobody reads would fill up and stop the server."""
    command = [sys.executable, "-m", "orchestrator", "serve", "--port", "0", "--broker", url]
    with tempfile.TemporaryFile("w+") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (found := re.search(r"open (http://\S+/)", Path(f"/proc/self/fd/{output.fileno()}").read_text())):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gatemesh serve printed no URL")
                time.sleep(0.1)
            yield found.group(1), server.pid
        finally:
            server.terminate()
            server.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def on_the_page(url: str, name: str, inputs: dict[str, float], expected: RunResult) -> None:
    """One pass on the deployment from `gatemesh serve`'s page (its WebSocket), measured."""
    with serving(url) as (page, pid):
        origin = page.rstrip("/")
        async with connect(origin.replace("http://", "ws://") + "/ws", origin=Origin(origin), max_size=None) as ws:
            await _until_listed(ws, name)
            before, start = cpu_seconds(pid), time.perf_counter()
            await ws.send(json.dumps({"type": "run", "deployment": name, "inputs": inputs, "timeout": 600}))
            run, progress, answers, largest, (over, cpu) = await _watch(ws, pid)
            elapsed, cpu = over - start, cpu - before
    assert run["status"] == "done", run["error"]
    assert RunResult.model_validate(run["result"]) == expected, "the page's result differs from the reference"
    assert progress["crossed"] == progress["expected"], progress
    answers.sort()
    print(
        f"on the page (gatemesh serve --broker URL, Run on it): done in {elapsed:.1f} s, as the reference; "
        f"{progress['crossed']:,} of {progress['expected']:,} messages counted; server CPU {cpu:.1f} s; "
        f"compile answered in median {answers[len(answers) // 2] * 1000:.0f} ms, max {answers[-1] * 1000:.0f} ms "
        f"({len(answers)} asked); largest push {largest:,} bytes"
    )


async def _until_listed(ws: ClientConnection, name: str) -> None:
    async with asyncio.timeout(60):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "cluster" and any(d["name"] == name for d in message["deployments"]):
                return


async def _watch(
    ws: ClientConnection, pid: int
) -> tuple[dict[str, Any], dict[str, Any], list[float], int, tuple[float, float]]:
    """The last run and progress parts once the run is over (and 3 s more, for late copies), the
    time each compile request took to be answered, the largest message the server pushed, and
    when the run was over with the server's CPU seconds then."""
    run: dict[str, Any] = {}
    progress: dict[str, Any] = {}
    answers: list[float] = []
    largest, asked, over, cpu = 0, 0.0, 0.0, 0.0
    async with asyncio.timeout(TIMEOUT):
        while not over or time.perf_counter() - over < 3:
            if not asked:
                asked = time.perf_counter()
                await ws.send(json.dumps({"type": "compile", "source": "x + y"}))
            raw = await ws.recv()
            largest = max(largest, len(raw))
            message = json.loads(raw)
            if message["type"] == "compiled":
                answers.append(time.perf_counter() - asked)
                await asyncio.sleep(0.3)
                asked = 0.0
            elif message["type"] == "problem":
                raise RuntimeError(f"the page said: {message['message']}")
            elif message["type"] == "progress" and message["progress"] is not None:
                progress = message["progress"]
            elif message["type"] == "run":
                run = message
                if not over and run["status"] in ("done", "failed"):
                    over, cpu = time.perf_counter(), cpu_seconds(pid)
    return run, progress, answers, largest, (over, cpu)


async def measure(url: str, names: list[str], circuit: Circuit, passes: int, page: bool) -> None:
    broker = BrokerAddress.parse(url)
    await mesh.wait_online(broker, names)
    pids = await host_pids(broker, names)
    inputs = inputs_for(circuit)
    edges = sum(len(g.inputs) for g in circuit.gates)
    print(f"broker {url}; {len(names)} host processes {', '.join(names)}")
    print(f"circuit {circuit.name}: {len(circuit.gates):,} gates, {edges:,} edges, {len(circuit.inputs)} inputs")
    print(f"hosts idle: RSS {rss(pids)}")
    start = time.perf_counter()
    expected = evaluate(circuit, inputs)
    print(f"reference pass in this process: {time.perf_counter() - start:.2f} s")
    name = f"big-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="gatemesh-big-") as work:
        path = Path(work, "circuit.json")
        circuit.dump(path)
        hosts = ",".join(names)
        deploy_s, said = gatemesh(
            "deploy", str(path), "--name", name, "--hosts", hosts, "--broker", url, "--timeout", f"{TIMEOUT:g}"
        )
    print(f"gatemesh deploy: {deploy_s:.1f} s wall; it said: {said.strip()}")
    print(f"hosts deployed: RSS {rss(pids)}")

    start = time.perf_counter()
    record = await find(name, broker)
    read_s = time.perf_counter() - start
    assert record.circuit == circuit, "the record read back is not the circuit deployed"
    assert set(record.placement.values()) == set(names)
    assert record.placement.keys() == circuit.by_id.keys()
    print(f"record read back and assembled from its {record.parts} parts: {read_s:.2f} s")

    pass_s = []
    async with on_deployment(name, broker, ready_timeout=TIMEOUT) as runner:
        for _ in range(passes):
            start = time.perf_counter()
            result = await runner.run(inputs, timeout=TIMEOUT)
            pass_s.append(time.perf_counter() - start)
            assert result == expected, "a pass on the hosts differs from the reference"
    shown = ", ".join(f"{s:.1f}" for s in pass_s)
    print(f"passes from this process (on_deployment): {shown} s (median {statistics.median(pass_s):.1f} s)")
    print(f"hosts after the passes: RSS {rss(pids)}; peak (VmHWM) {rss(pids, 'VmHWM')}")

    assignments = [f"{k}={v!r}" for k, v in inputs.items()]
    cli_s, printed = gatemesh("run", "--deployed", name, *assignments, "--json", "--broker", url, "--timeout", "600")
    assert json.loads(printed) == expected.model_dump(), "gatemesh run --deployed differs from the reference"
    print(f"gatemesh run --deployed {name} ({len(assignments)} inputs) --json: {cli_s:.1f} s wall, as the reference")

    if page:
        await on_the_page(url, name, inputs, expected)

    undeploy_s, said = gatemesh("undeploy", name, "--broker", url)
    print(f"gatemesh undeploy: {undeploy_s:.1f} s wall; it said: {said.strip()}")
    start = time.perf_counter()
    left = await retained_left(broker, name, record.circuit_id, 120)
    assert not left, f"{len(left)} retained message(s) left, e.g. {sorted(left)[:3]}"
    print(f"nothing of the deployment retained {time.perf_counter() - start:.1f} s after the undeploy returned")
    await asyncio.sleep(2)
    print(f"hosts after the undeploy: RSS {rss(pids)}")


def run(hosts: int, gates: int, passes: int, page: bool = False) -> None:
    circuit = mlp_circuit() if gates == 0 else mesh.wide_circuit(gates)
    with mosquitto() as url, mesh.host_processes(url, hosts) as names:
        asyncio.run(measure(url, names, circuit, passes, page))
