"""What tracing costs: a pass with clocks on its messages and every event recorded, vs. a plain pass.

    python -m bench.tracing [--passes 300] [--broker mqtt://host:port]
    python -m bench.tracing --big [--broker mqtt://host:port]

Two in-process deployments of each circuit (per-gate connections, then one shared
connection): one with a plain runner, one with a runner with a Recorder (orchestrator/recorder.py,
and its tap on the broker). Plain and traced passes take turns in blocks of BLOCK sequential
passes, so both see the same machine at the same time, and nothing traces a plain pass. Every
result is checked, and every traced block's trace is complete.

--big: big circuits instead, on one shared connection: a 1,000-gate layered circuit and a sum
of 500 products x*w_i (x has 500 consumers, 1,500 gates), BIG_PASSES passes each way, and for
each traced pass what reading its trace costs after it (waiting for its last events, making
every event with its whole vector clock) and how large its trace file would be.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from typing import NamedTuple

from bench.mesh import NEURON, NEURON_INPUTS, QF, QF_INPUTS, wide_circuit
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
    """This process's CPU time per plain pass (everything but the broker): less swayed by other jobs."""
    traced_cpu_ms: float
    reading_ms: float
    """Per traced pass, afterwards: waiting for its last events and reading them into a Trace."""


async def traced_vs_plain(
    broker: BrokerAddress, source: str, inputs: dict[str, float], passes: int, connections: Connections
) -> Comparison:
    """Plain and traced passes, measured in alternating blocks on two deployments of the circuit.

    One deployment has a plain runner, the other a runner with a Recorder (and so the
    recorder's tap on that deployment's topics): each pass runs with exactly what its kind
    needs, and the idle deployment's gates cost nothing. After each traced block its trace
    must be complete; waiting for it and reading it is measured on its own."""
    circuit = compile_source(source)
    plain: list[float] = []
    traced: list[float] = []
    cpu = {"plain": 0.0, "traced": 0.0, "reading": 0.0}
    recorder = Recorder()
    async with (
        in_process(circuit, broker, connections=connections) as runner,
        in_process(circuit, broker, connections=connections, recorder=recorder) as tracing,
    ):
        await _block(runner, inputs, 20, [])  # warm-up, both ways
        await _block(tracing, inputs, 20, [])
        while len(plain) < passes:
            recorder.clear()
            start = time.process_time()
            await _block(runner, inputs, BLOCK, plain)
            cpu["plain"] += time.process_time() - start
            start = time.process_time()
            await _block(tracing, inputs, BLOCK, traced)
            cpu["traced"] += time.process_time() - start
            start = time.process_time()
            assert await recorder.drain() == 0, "a traced block's trace is incomplete"
            assert len(recorder.trace().header.runs) == BLOCK
            cpu["reading"] += time.process_time() - start
    per = {kind: seconds / len(plain) * 1000 for kind, seconds in cpu.items()}
    return Comparison(plain, traced, per["plain"], per["traced"], per["reading"])


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


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
    args = parser.parse_args()

    async def measure(url: str) -> None:
        broker = BrokerAddress.parse(url)
        if args.big:
            for circuit in (wide_circuit(1000), fan_circuit(500)):
                print(await big(broker, circuit))
            return
        for source, inputs in ((QF, QF_INPUTS), (NEURON, NEURON_INPUTS)):
            for connections in CONNECTIONS:
                found = await traced_vs_plain(broker, source, inputs, args.passes, connections)
                ratio = median_ms(found.traced) / median_ms(found.plain)
                verdict = "met" if ratio <= 1.5 else "not met"
                print(
                    f"{source:<28} {connections:<9} plain {median_ms(found.plain):.3f} ms"
                    f"  traced {median_ms(found.traced):.3f} ms  ratio {ratio:.2f} (target <= 1.5: {verdict})"
                    f"  CPU per pass {found.plain_cpu_ms:.2f} / {found.traced_cpu_ms:.2f} ms"
                    f" = {found.traced_cpu_ms / found.plain_cpu_ms:.2f}; reading the trace {found.reading_ms:.2f} ms"
                )

    if args.broker:
        await measure(args.broker)
        return
    with mosquitto() as url:
        await measure(url)


if __name__ == "__main__":
    asyncio.run(main())
