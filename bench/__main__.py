"""`python -m bench [--broker URL] [--quick]`: the whole benchmark suite, one table.

Without --broker it starts a Mosquitto on loopback with the project's config. Every figure is
a median with its spread (p10-p90), and every comparison is measured in the same run:
absolute times drift on these machines, ratios much less. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from bench import mesh, raw
from bench.scale import measure_in_subprocess
from broker.launch import mosquitto
from gates.host import Connections
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source

console = Console(width=200)
CONNECTIONS: tuple[Connections, ...] = ("per-gate", "shared")


def spread(samples: list[float], scale: float = 1000.0, unit: str = "ms", digits: str = ".3f") -> str:
    """The median and, in brackets, p10-p90 (min-max for fewer than 10 samples)."""
    ordered = sorted(s * scale for s in samples)
    p10, p90 = ordered[int(0.1 * (len(ordered) - 1))], ordered[int(0.9 * (len(ordered) - 1))]
    if len(ordered) < 10:
        p10, p90 = ordered[0], ordered[-1]
    return f"{statistics.median(ordered):{digits}} {unit} ({p10:{digits}}-{p90:{digits}})"


def rate(samples: list[float], unit: str) -> str:
    return spread(samples, 1.0, unit, ",.0f")


@contextlib.contextmanager
def broker_for(url: str | None) -> Iterator[str]:
    if url:
        yield url
    else:
        with mosquitto() as started:
            yield started


async def suite(url: str, quick: bool) -> Table:
    broker = BrokerAddress.parse(url)
    rounds, passes, seconds = (200, 100, 2.0) if quick else (1000, 300, 5.0)
    table = Table(title=f"gatemesh benchmarks against {url}", title_justify="left")
    for column in ("measure", "result", "target / comparison"):
        table.add_column(column)

    hop = {qos: await raw.hop_latency(broker, qos, rounds) for qos in (0, 1)}
    session_hop = {qos: await raw.session_hop_latency(broker, qos, rounds) for qos in (0, 1)}
    ring = {qos: await raw.relay_ring(broker, qos, seconds=seconds) for qos in (0, 1)}
    for qos in (0, 1):
        table.add_row(f"raw hop, aiomqtt, QoS {qos}", spread(hop[qos], 1e6, "us"), "anchor")
    for qos in (0, 1):
        table.add_row(
            f"raw hop, gatemesh session, QoS {qos}",
            spread(session_hop[qos], 1e6, "us"),
            "the data plane's floor (gates/mqtt311.py)",
        )
    for qos in (0, 1):
        table.add_row(f"relay ring, 50 actors, 100 in flight, QoS {qos}", rate(ring[qos], "hops/s"), "anchor")

    hop1, session_hop1 = statistics.median(hop[1]), statistics.median(session_hop[1])
    for source, inputs in ((mesh.QF, mesh.QF_INPUTS), (mesh.NEURON, mesh.NEURON_INPUTS)):
        for connections in CONNECTIONS:
            samples = await mesh.pass_latency(broker, source, inputs, passes, connections)
            hops = compile_source(source).pass_hops()
            ratio = statistics.median(samples) / (hops * hop1)
            floor = statistics.median(samples) / (hops * session_hop1)
            verdict = "met" if ratio <= 1.25 else "not met"
            table.add_row(
                f"pass latency {source} ({hops} hops), QoS 1, {connections} connections",
                spread(samples),
                f"{ratio:.2f} x (hops x raw QoS 1 hop); target <= 1.25: {verdict}; {floor:.2f} x the session hop",
            )

    neuron = compile_source(mesh.NEURON)
    for count, connections, qos in ((1, "per-gate", 1), (1, "shared", 1), (1, "shared", 0), (2, "shared", 1)):
        with mesh.host_processes(url, count, connections, qos) as names:
            await mesh.wait_online(broker, names)
            async with mesh.deployed_on(broker, neuron, names) as runner:
                rates, lost = await mesh.throughput(runner, in_flight=100, seconds=seconds)
        ratio = statistics.median(rates) / statistics.median(ring[qos])
        verdict = "met" if ratio >= 3 and not lost else "not met"
        table.add_row(
            f"throughput, neuron, {count} host process(es), {connections} connections, 100 runs in flight, QoS {qos}",
            f"{rate(rates, 'messages/s')}, {lost} runs lost",
            f"{ratio:.2f} x the QoS {qos} ring; target >= 3 with none lost: {verdict}",
        )

    points = []
    kinds = [("wide", gates) for gates in ((100, 1000) if quick else (100, 1000, 10000))]
    for kind, size in kinds if quick else [*kinds, ("mlp", 0)]:
        point = await measure_in_subprocess(url, kind, size)
        points.append(point)
        per_gate = point.rss_delta_kb / point.gates
        memory, verdict = f"{per_gate:.2f} KB/gate", "met" if per_gate <= 4 else "not met"
        if point.rss_delta_kb < 1024:  # under 1 MB: the process's free memory absorbs it, nothing measured
            memory, verdict = "memory below RSS resolution", "not measurable here"
        table.add_row(
            f"scale: {kind}, {point.gates:,} gates ({point.edges:,} edges), in process, one shared connection",
            f"deploy {point.deploy_s:.2f} s, pass {spread(point.pass_s, 1.0, 's')}, {memory}, "
            f"peak RSS {point.peak_rss_mb:.0f} MB; gradients equal the reference's",
            f"reference {point.reference_s * 1000:.2f} ms; target <= 4 KB/gate: {verdict}"
            + (f"; deploy <= 30 s: {'met' if point.deploy_s <= 30 else 'not met'}" if point.gates > 50_000 else ""),
        )
    if len(points) >= 2:
        xs = [math.log(p.edges) for p in points]
        ys = [math.log(statistics.median(p.pass_s)) for p in points]
        slope = statistics.linear_regression(xs, ys).slope
        table.add_row("scale: pass time vs edges, fitted exponent", f"{slope:.2f}", "linear is 1.0")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--broker", default=None, help="mqtt://host:port (default: start a Mosquitto on loopback)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller circuits")
    parser.add_argument("--mlp", action="store_true", help="only the 65,000-gate MLP point (about 2 minutes)")
    args = parser.parse_args()
    with broker_for(args.broker) as url:
        if args.mlp:
            point = asyncio.run(measure_in_subprocess(url, "mlp"))
            console.print(point)
            console.print(f"{point.rss_delta_kb / point.gates:.2f} KB per gate; gradients equal the reference's")
            return
        console.print(asyncio.run(suite(url, args.quick)))


if __name__ == "__main__":
    main()
