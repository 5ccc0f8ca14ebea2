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
from bench.mlp import mlp_circuit
from broker.launch import mosquitto
from gates.host import Connections
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source

console = Console(width=200)
CONNECTIONS: tuple[Connections, ...] = ("per-gate", "shared")


def spread(samples: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    ordered = sorted(s * scale for s in samples)
    p10, p90 = ordered[int(0.1 * (len(ordered) - 1))], ordered[int(0.9 * (len(ordered) - 1))]
    return f"{statistics.median(ordered):.3f} {unit} ({p10:.3f}-{p90:.3f})"


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
        table.add_row(f"relay ring, 50 actors, 100 in flight, QoS {qos}", f"{ring[qos]:,.0f} hops/s", "anchor")

    hop1, session_hop1 = statistics.median(hop[1]), statistics.median(session_hop[1])
    for source, inputs in ((mesh.QF, mesh.QF_INPUTS), (mesh.NEURON, mesh.NEURON_INPUTS)):
        for connections in CONNECTIONS:
            samples = await mesh.pass_latency(broker, source, inputs, passes, connections)
            hops = mesh.pass_hops(compile_source(source))
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
                rate, lost = await mesh.throughput(runner, in_flight=100, seconds=seconds)
        ratio = rate / ring[qos]
        verdict = "met" if ratio >= 3 and not lost else "not met"
        table.add_row(
            f"throughput, neuron, {count} host process(es), {connections} connections, 100 runs in flight, QoS {qos}",
            f"{rate:,.0f} messages/s, {lost} runs lost",
            f"{ratio:.2f} x the QoS {qos} ring; target >= 3 with none lost: {verdict}",
        )

    points = []
    for gates in (100, 1000) if quick else (100, 1000, 10000):
        point = await mesh.scale_point(broker, mesh.wide_circuit(gates))
        points.append(point)
        per_gate = point.rss_delta_kb / point.gates
        memory, verdict = f"{per_gate:.2f} KB/gate", "met" if per_gate <= 4 else "not met"
        if point.rss_delta_kb < 1024:  # under 1 MB: the process's free memory absorbs it, nothing measured
            memory, verdict = "memory below RSS resolution", "not measurable here"
        table.add_row(
            f"scale: {point.gates} gates ({point.edges} edges), in process, one shared connection",
            f"deploy {point.deploy_s:.2f} s, pass {point.pass_s * 1000:.0f} ms, {memory}, "
            f"peak RSS {point.peak_rss_mb:.0f} MB",
            f"reference {point.reference_s * 1000:.2f} ms; target <= 4 KB/gate: {verdict}",
        )
    if len(points) >= 2:
        xs = [math.log(p.edges) for p in points]
        ys = [math.log(p.pass_s) for p in points]
        slope = statistics.linear_regression(xs, ys).slope
        table.add_row("scale: pass time vs edges, fitted exponent", f"{slope:.2f}", "linear is 1.0")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--broker", default=None, help="mqtt://host:port (default: start a Mosquitto on loopback)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller circuits")
    parser.add_argument("--mlp", action="store_true", help="only the 65,000-gate MLP point (about 12 minutes)")
    args = parser.parse_args()
    with broker_for(args.broker) as url:
        if args.mlp:
            point = asyncio.run(mesh.scale_point(BrokerAddress.parse(url), mlp_circuit()))
            console.print(point)
            console.print(f"{point.rss_delta_kb / point.gates:.2f} KB per gate; gradients equal the reference's")
            return
        console.print(asyncio.run(suite(url, args.quick)))


if __name__ == "__main__":
    main()
