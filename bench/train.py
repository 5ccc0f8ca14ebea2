"""Seconds per training step: the mesh against micrograd, the numpy reference and the scalar-gate mesh.

    python -m bench.train [--broker URL] [--steps 100] [--micrograd-steps 10] [--scalar]

In one run against one broker (a Mosquitto started on loopback unless --broker is given):

1. the mesh: the moons MLP's 29 tensor gates and parameter actors on ONE gate host process
   (`python -m gates`, its gates on one shared connection), the trainer in this process;
   every step's loss, accuracy and final parameters are checked against the reference;
2. the same gates in this process (what `gatemesh train moons --broker URL` does);
3. micrograd 0.1.0's demo step in this process on the same points, with its defaults (the
   demo's numpy arrays, the garbage collector on), then with the points as Python floats;
4. the numpy reference (`gatemesh train --engine reference`);
5. with --scalar: one pass of the scalar-gate version (one gate actor per multiply,
   ~65,000 gates, in this process on one shared connection) and its deployment;
6. where a mesh step's time goes: hops on the critical path x the session's raw QoS 1 hop,
   the ops' compute (the reference's step), and encoding and decoding every frame of a step.

Medians with min-max or p10-p90 (bench/__main__.py's `spread`). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import mesh, raw
from bench.__main__ import broker_for, spread
from gates.frame import FrameHeader, decode, encode
from gates.transport import BrokerAddress
from orchestrator import deploy, mlp, mlp_scalar, moons, tensor_deploy
from orchestrator.checkpoint import Checkpoint
from orchestrator.moons import Points
from orchestrator.reference import evaluate as scalar_evaluate
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.train import Engine, ReferenceEngine, Schedule, Training, train

console = Console(width=200)


def start(schedule: Schedule) -> Checkpoint:
    return Checkpoint(mlp.micrograd_init(schedule.seed), 0, schedule.seed, schedule.steps, schedule.batch)


async def timed(engine: Engine, circuit: TensorCircuit, schedule: Schedule) -> Training:
    return await train(engine, circuit, moons.load(), schedule, start(schedule))


def check(done: Training, expected: Training) -> None:
    assert [(r.loss, r.accuracy) for r in done.records] == [(r.loss, r.accuracy) for r in expected.records]
    assert all(done.params[n].tobytes() == expected.params[n].tobytes() for n in expected.params)


def step_seconds(done: Training) -> list[float]:
    return [r.seconds for r in done.records[1:]]  # the first step pays for warming up


def micrograd_seconds(data: Points, steps: int, *, floats: bool) -> tuple[list[float], float]:
    """micrograd's demo step with its defaults, timed per step, and its first loss (checked)."""
    import random

    from micrograd.engine import Value  # type: ignore[import-untyped]
    from micrograd.nn import MLP  # type: ignore[import-untyped]

    X = data.X.tolist() if floats else data.X
    y = data.y.tolist() if floats else (data.y).astype(np.int64)  # the demo's labels are numpy ints
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    seconds, first = [], 0.0
    for k in range(steps):
        began = time.perf_counter()
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total_loss = data_loss + reg_loss
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        seconds.append(time.perf_counter() - began)
        if k == 0:
            first = float(total_loss.data)
    gc.collect()
    return seconds, first


def encoding_seconds(circuit: TensorCircuit, rounds: int = 200) -> float:
    """Encode and decode the frames of a step that carry a gate's array: every forward, every
    gradient and every parameter's report (the trainer's 8 feeds and its seed aside)."""
    shapes = circuit.shapes
    arrays = [np.ones(shapes[g.id]) for g in circuit.gates]  # a forward of every gate
    arrays += [np.ones(shapes[s]) for g in circuit.gates for s in g.inputs if circuit.learns[s]]  # backward
    arrays += [np.ones(shapes[p]) for p in circuit.params]  # reports
    header = FrameHeader(kind="forward", circuit="moons.5d0c9e7a", sender="mm1", run="s3-0a1b2c3d", step=3)
    framed = [header.model_copy(update={"shape": a.shape}) for a in arrays]
    began = time.perf_counter()
    for _ in range(rounds):
        for h, a in zip(framed, arrays, strict=True):
            decode(encode(h, a))
    return (time.perf_counter() - began) / rounds


def scalar_pass(broker: BrokerAddress, data: Points) -> tuple[int, float, float, float]:
    """Gates, deploy seconds, pass seconds and the reference's seconds of the scalar-gate network."""
    circuit = mlp_scalar.circuit(data, range(len(data)))
    inputs = mlp_scalar.to_inputs(mlp.micrograd_init(1337))
    began = time.perf_counter()
    expected = scalar_evaluate(circuit, inputs)
    reference_s = time.perf_counter() - began

    async def one_pass() -> tuple[float, float]:
        began = time.perf_counter()
        async with deploy.in_process(circuit, broker, connections="shared", ready_timeout=600) as runner:
            deployed = time.perf_counter() - began
            began = time.perf_counter()
            result = await runner.run(inputs, timeout=600)
            passed = time.perf_counter() - began
        assert result == expected
        return deployed, passed

    deployed, passed = asyncio.run(one_pass())
    return len(circuit.gates), deployed, passed, reference_s


@dataclass
class Measured:
    reference: Training
    on_host: Training
    here: Training
    hop: float
    """The session's median QoS 1 hop, in seconds."""
    hops: int
    """Hops on a step's critical path."""
    encoding: float


async def measure(url: str, steps: int) -> Measured:
    broker = BrokerAddress.parse(url)
    schedule = Schedule(steps=steps)
    circuit = mlp.build(100)
    reference = await timed(ReferenceEngine(circuit), circuit, schedule)
    with mesh.host_processes(url, 1) as names:
        await mesh.wait_online(broker, names)
        async with tensor_deploy.on_hosts(circuit, broker, hosts=names) as engine:
            on_host = await timed(engine, circuit, schedule)
    check(on_host, reference)
    async with tensor_deploy.in_process(circuit, broker) as engine:
        here = await timed(engine, circuit, schedule)
    check(here, reference)
    session_hop = await raw.session_hop_latency(broker, 1, 300)
    hops = 2 * (circuit.critical_path() + 1)
    return Measured(reference, on_host, here, statistics.median(session_hop), hops, encoding_seconds(circuit))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__)
    parser.add_argument("--broker", default=None, help="mqtt://host:port (default: start a Mosquitto on loopback)")
    parser.add_argument("--steps", type=int, default=100, help="training steps on each engine")
    parser.add_argument("--micrograd-steps", type=int, default=10, help="micrograd steps to time (each 1-4 s)")
    parser.add_argument("--scalar", action="store_true", help="also one pass of the ~65,000-gate scalar network")
    args = parser.parse_args()
    data = moons.load()
    with broker_for(args.broker) as url:
        found = asyncio.run(measure(url, args.steps))
        demo, demo_first = micrograd_seconds(data, args.micrograd_steps, floats=False)
        floats, floats_first = micrograd_seconds(data, args.micrograd_steps, floats=True)
        scalar = scalar_pass(BrokerAddress.parse(url), data) if args.scalar else None
    reference, on_host, here = found.reference, found.on_host, found.here
    for first in (demo_first, floats_first):
        assert abs(first - reference.records[0].loss) <= 1e-9 * abs(first), (first, reference.records[0].loss)
    mesh_s = statistics.median(step_seconds(on_host))
    hop, hops, encoding = found.hop, found.hops, found.encoding
    compute = statistics.median(step_seconds(reference))
    table = Table(title=f"gatemesh train moons: seconds per step against {url}", title_justify="left")
    for column in ("measure", "seconds per step", "comparison"):
        table.add_column(column)
    table.add_row(
        "mesh, 29 tensor gates on 1 gate host process (shared connection), trainer in this process",
        spread(step_seconds(on_host)),
        f"{len(on_host.records)} steps; loss, accuracy and parameters equal the reference's bit for bit",
    )
    table.add_row("mesh, the same gates in this process", spread(step_seconds(here)), "equal to the reference too")
    for label, samples in (("demo's numpy data, gc on (its defaults)", demo), ("points as Python floats", floats)):
        ratio = statistics.median(samples) / mesh_s
        verdict = "met" if ratio >= 30 else "not met"
        table.add_row(
            f"micrograd 0.1.0, one demo step, {label}",
            spread(samples),
            f"**{ratio:.0f} x** the mesh on a host process; target >= 30: {verdict}",
        )
    table.add_row(
        "numpy reference in this process",
        spread(step_seconds(reference)),
        f"{mesh_s / compute:.0f} x faster than the mesh",
    )
    table.add_row(
        "mesh step: hops on the critical path x raw session hop (QoS 1)",
        f"{hops} x {hop * 1e6:.0f} us = {hops * hop * 1000:.2f} ms",
        f"{hops * hop / mesh_s:.0%} of a mesh step",
    )
    table.add_row(
        "mesh step: compute (the ops, as the reference runs them)",
        f"{compute * 1000:.2f} ms",
        f"{compute / mesh_s:.0%}",
    )
    table.add_row(
        "mesh step: encode + decode every frame of a step once", f"{encoding * 1000:.2f} ms", f"{encoding / mesh_s:.0%}"
    )
    if scalar is not None:
        gates, deployed, passed, reference_s = scalar
        table.add_row(
            f"scalar-gate mesh: {gates:,} gate actors in this process, one pass (a step)",
            f"{passed:.1f} s (deploy {deployed:.1f} s)",
            f"{passed / mesh_s:,.0f} x the tensor mesh; scalar reference {reference_s:.2f} s; gradients equal it",
        )
    console.print(table)


if __name__ == "__main__":
    main()
