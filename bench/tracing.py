"""What tracing costs: a pass with clocks on its messages and every event recorded, vs. a plain pass.

    python -m bench.tracing [--passes 300] [--broker mqtt://host:port] [--only this-process|host]
    python -m bench.tracing --sizes [--broker mqtt://host:port]
    python -m bench.tracing --big [--broker mqtt://host:port]

Two deployments of each circuit: one with a plain runner, one with a runner with a Recorder
(orchestrator/recorder.py, and its tap on the broker). The gates are in this process, each
with its own connection or all on one shared connection, and then on a gate host process (one
shared connection, what `python -m gates` runs). Plain and traced passes take turns in blocks
of BLOCK sequential passes, so both see the same machine at the same time, and nothing traces
a plain pass; which goes first alternates, so neither always follows the other (or the
reading of the last trace). Every result is checked, and every traced block's trace is complete.

--sizes: how the cost grows with the circuit: layered circuits of SIZES gates, per-gate
connections and one shared connection, compared as above.

--big: big circuits instead, on one shared connection: a 1,000-gate layered circuit and a sum
of 500 products x*w_i (x has 500 consumers, 1,500 gates), BIG_PASSES passes each way, and for
each traced pass what reading its trace costs after it (waiting for its last events, making
every event with its whole vector clock) and how large its trace file would be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import time
from pathlib import Path
from typing import NamedTuple

from bench.mesh import NEURON, NEURON_INPUTS, QF, QF_INPUTS, deployed_on, host_processes, wait_online, wide_circuit
from broker.launch import mosquitto
from gates.host import Connections
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.recorder import Recorder
from orchestrator.reference import evaluate
from orchestrator.runner import Runner
from orchestrator.trace import dump_lines

BLOCK = 10
CONNECTIONS: tuple[Connections, ...] = ("per-gate", "shared")
BIG_PASSES = 3
SIZES = (10, 30, 60, 100, 200)
"""--sizes: layered circuits up to the largest the web page traces."""


async def _block(runner: Runner, inputs: dict[str, float], passes: int, samples: list[float]) -> None:
    expected = evaluate(runner.circuit, inputs)
    for _ in range(passes):
        start = time.perf_counter()
        result = await runner.run(inputs)
        samples.append(time.perf_counter() - start)
        assert result == expected, result


class Comparison(NamedTuple):
    plain: list[float]
    """Seconds per plain pass."""
    traced: list[float]
    plain_cpu_ms: float
    """CPU time per plain pass of the processes the gates and the runner live in (not the
    broker's): less swayed by other jobs than wall time."""
    traced_cpu_ms: float
    reading_ms: float
    """Per traced pass, afterwards: waiting for its last events and reading them into a Trace."""


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by this process and by `pids` (gate host processes)."""
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


async def traced_vs_plain(
    runner: Runner, tracing: Runner, recorder: Recorder, inputs: dict[str, float], passes: int, pids: list[int]
) -> Comparison:
    """Plain and traced passes, measured in alternating blocks on two deployments of one circuit.

    `runner` is a plain runner on one deployment, `tracing` a runner with `recorder` (and so
    the recorder's tap on that deployment's topics) on the other: each pass runs with exactly
    what its kind needs, and the idle deployment's gates cost nothing. After each traced block
    its trace must be complete; waiting for it and reading it is measured on its own. CPU is
    this process's and that of `pids`, the gate hosts."""
    plain: list[float] = []
    traced: list[float] = []
    cpu = {"plain": 0.0, "traced": 0.0, "reading": 0.0}
    await _block(runner, inputs, 20, [])  # warm-up, both ways
    await _block(tracing, inputs, 20, [])
    rounds = 0
    while len(plain) < passes:
        recorder.clear()
        kinds = [("plain", runner, plain), ("traced", tracing, traced)]
        for kind, chosen, samples in kinds if rounds % 2 == 0 else kinds[::-1]:  # neither always goes first
            start = cpu_seconds(pids)
            await _block(chosen, inputs, BLOCK, samples)
            cpu[kind] += cpu_seconds(pids) - start
        rounds += 1
        start = cpu_seconds(pids)
        assert await recorder.drain() == 0, "a traced block's trace is incomplete"
        assert len(recorder.trace().header.runs) == BLOCK
        cpu["reading"] += cpu_seconds(pids) - start
    per = {kind: seconds / len(plain) * 1000 for kind, seconds in cpu.items()}
    return Comparison(plain, traced, per["plain"], per["traced"], per["reading"])


async def in_this_process(
    broker: BrokerAddress, circuit: Circuit, inputs: dict[str, float], passes: int, connections: Connections
) -> Comparison:
    """Gates, runners and recorder in this process: each gate with its own connection (what
    `gatemesh run` deploys), or all on one shared connection."""
    recorder = Recorder()
    async with (
        in_process(circuit, broker, connections=connections) as runner,
        in_process(circuit, broker, connections=connections, recorder=recorder) as tracing,
    ):
        return await traced_vs_plain(runner, tracing, recorder, inputs, passes, [])


async def on_a_host(
    broker: BrokerAddress, host: str, pid: int, source: str, inputs: dict[str, float], passes: int
) -> Comparison:
    """Gates on a gate host process (`python -m gates`: one shared connection for its gates),
    the runners and the recorder here: what `gatemesh run --deployed --trace` does."""
    circuit = compile_source(source)
    recorder = Recorder()
    async with (
        deployed_on(broker, circuit, [host]) as runner,
        deployed_on(broker, circuit, [host], recorder=recorder) as tracing,
    ):
        return await traced_vs_plain(runner, tracing, recorder, inputs, passes, [pid])


def pid_of(host: str) -> int:
    """The process of gate host `host` (started by bench.mesh.host_processes)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if host.encode() in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
    raise LookupError(f"no process for gate host {host}")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def report(source: str, where: str, found: Comparison) -> None:
    ratio = median_ms(found.traced) / median_ms(found.plain)
    verdict = "met" if ratio <= 1.5 else "not met"
    print(
        f"{source:<28} {where:<9} plain {median_ms(found.plain):.3f} ms"
        f"  traced {median_ms(found.traced):.3f} ms  ratio {ratio:.2f} (target <= 1.5: {verdict})"
        f"  CPU per pass {found.plain_cpu_ms:.2f} / {found.traced_cpu_ms:.2f} ms"
        f" = {found.traced_cpu_ms / found.plain_cpu_ms:.2f}; reading the trace {found.reading_ms:.2f} ms",
        flush=True,
    )


def fan_circuit(consumers: int) -> Circuit:
    """x*w0 + x*w1 + ...: one input read by `consumers` products, summed in a chain."""
    return compile_source(" + ".join(f"x*w{i}" for i in range(consumers)), name=f"fan{consumers}")


async def big(broker: BrokerAddress, circuit: Circuit) -> str:
    """One line: plain and traced pass, reading the trace, its size, for a big circuit."""
    inputs = {name: 0.001 * (i % 97) - 0.05 for i, name in enumerate(circuit.inputs)}
    expected = evaluate(circuit, inputs)
    plain: list[float] = []
    traced: list[float] = []
    reading: list[float] = []
    recorder = Recorder()
    async with (
        in_process(circuit, broker, connections="shared", ready_timeout=600) as runner,
        in_process(circuit, broker, connections="shared", ready_timeout=600, recorder=recorder) as tracing,
    ):
        for _ in range(BIG_PASSES):
            await _block(runner, inputs, 1, plain)
            recorder.clear()
            start = time.perf_counter()
            assert await tracing.run(inputs, timeout=600) == expected
            traced.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert await recorder.drain(timeout=60) == 0
            trace = recorder.trace()
            reading.append(time.perf_counter() - start)
    events = len(trace.events)
    megabytes = sum(len(line) + 1 for line in dump_lines(trace)) / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"{circuit.name:<8} {len(circuit.gates):>5} gates  plain {median_ms(plain):.0f} ms"
        f"  traced {median_ms(traced):.0f} ms ({median_ms(traced) / median_ms(plain):.1f}x)"
        f"  reading the trace {median_ms(reading):.0f} ms  {events} events, {megabytes:.0f} MB as a file"
        f"  peak RSS so far {peak:.0f} MB"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--broker", default=None)
    parser.add_argument("--big", action="store_true", help="a 1,000-gate circuit and a 500-consumer fan-out")
    parser.add_argument("--only", choices=["this-process", "host"], default=None, help="one of the two set-ups")
    parser.add_argument("--sizes", action="store_true", help="layered circuits of 10 to 200 gates")
    args = parser.parse_args()

    async def measure(url: str) -> None:
        broker = BrokerAddress.parse(url)
        if args.big:
            for circuit in (wide_circuit(1000), fan_circuit(500)):
                print(await big(broker, circuit))
            return
        if args.sizes:
            for connections in CONNECTIONS:
                for gates in SIZES:
                    circuit = wide_circuit(gates)
                    inputs = {name: 0.001 * (i % 97) - 0.05 for i, name in enumerate(circuit.inputs)}
                    passes = max(BLOCK * 4, args.passes * 10 // gates)
                    found = await in_this_process(broker, circuit, inputs, passes, connections)
                    report(f"{len(circuit.gates)} gates ({circuit.name})", connections, found)
            return
        for source, inputs in ((QF, QF_INPUTS), (NEURON, NEURON_INPUTS)):
            for connections in CONNECTIONS if args.only != "host" else ():
                found = await in_this_process(broker, compile_source(source), inputs, args.passes, connections)
                report(source, connections, found)
        if args.only == "this-process":
            return
        with host_processes(url, 1) as (host,):
            await wait_online(broker, [host])
            for source, inputs in ((QF, QF_INPUTS), (NEURON, NEURON_INPUTS)):
                report(source, "on a host", await on_a_host(broker, host, pid_of(host), source, inputs, args.passes))

    if args.broker:
        await measure(args.broker)
        return
    with mosquitto() as url:
        await measure(url)


if __name__ == "__main__":
    asyncio.run(main())
