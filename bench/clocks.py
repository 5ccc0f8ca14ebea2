"""What the logical clocks cost a gate, without a broker: a message's clock, and a pass's gate work.

    python -m bench.clocks [--gates 60] [--passes 15] [--rounds 12]

- One backward message whose vector clock knows every node of a `wide_circuit(gates)`
  deployment: its size, and the time to decode it, merge its clock and stamp and encode it.
- One pass replayed in memory: every gate's `GateCore.receive` of every message it would hear
  (feeds, forwards, the seed, gradients), encoded and decoded as on the wire; traced, also
  `GateTracer.step` and `batch`, with the orchestrator's clock on the feeds and the seed. No
  broker, no event loop: the gates' own work, plain and traced, and the bytes of their data
  messages. CPU per pass, the least of `rounds` rounds (this machine's speed drifts; the least
  is the one least disturbed), the kinds taking turns.
- The same pass with the clocks alone: each gate merges every clock it receives and stamps
  every message it sends, as the textbook says, and records nothing. What any traced pass must
  pay, whatever it does with its events; with a plain pass's CPU from `bench.tracing`, the
  least a traced pass can cost (docs/benchmarks.md, Tracing).

Results: docs/benchmarks.md (Tracing).
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections import deque
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from bench.mesh import wide_circuit
from gates.clocks import Clock
from gates.core import GateCore
from gates.protocol import MESSAGE_ADAPTER, ORCHESTRATOR, Backward, Feed, topic
from gates.tracing import GateTracer, with_clock
from gates.transport import encode
from orchestrator.circuit import Circuit

DEPLOYMENT = "bench"
Kind = Literal["plain", "clocks", "traced"]
"""plain: no clocks; clocks: merged and stamped, nothing recorded; traced: what a traced run does."""


def microseconds(call: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def one_message(circuit: Circuit) -> str:
    """A backward message whose clock has an entry for every node, as late in a pass."""
    clock = Clock(circuit.gates[-1].id, len(circuit.gates))
    clock.vc = [3] * len(circuit.nodes)
    message = with_clock(Backward(circuit=DEPLOYMENT, sender=clock.node, run="r1", port=0, grad=0.5), clock.send())
    payload = encode(message)
    plain = encode(message.model_copy(update={"clock": None}))
    received = MESSAGE_ADAPTER.validate_json(payload).clock
    assert received is not None
    receiver = Clock(circuit.gates[0].id, 1)
    return (
        f"a backward message with {len(circuit.nodes)} clock entries: {len(payload)} bytes ({len(plain)} without); "
        f"decode {microseconds(lambda: MESSAGE_ADAPTER.validate_json(payload)):.1f} us "
        f"({microseconds(lambda: MESSAGE_ADAPTER.validate_json(plain)):.1f} without), "
        f"merge {microseconds(lambda: receiver.merge(received)):.1f} us, "
        f"stamp and encode {microseconds(lambda: encode(with_clock(message, receiver.stamp()))):.1f} us"
    )


class Replay:
    """Every gate of one deployment in memory, and the topics each hears."""

    def __init__(self, circuit: Circuit) -> None:
        self.circuit = circuit
        self.cores = {spec.id: GateCore(spec, DEPLOYMENT) for spec in circuit.specs()}
        self.hearers: dict[str, list[str]] = {}
        for gate, core in self.cores.items():
            for name in core.subscriptions():
                self.hearers.setdefault(name, []).append(gate)
        self.inputs = {name: 0.001 * (i % 97) - 0.05 for i, name in enumerate(circuit.inputs)}
        self.tracers: dict[str, GateTracer] = {}
        self.bytes = 0

    def tracing(self) -> None:
        specs = {spec.id: spec for spec in self.circuit.specs()}
        self.tracers = {g: GateTracer(g, spec.index, spec.inputs, DEPLOYMENT, "h") for g, spec in specs.items()}

    def run(self, run: str, kind: Kind) -> None:
        """One pass: the orchestrator's feeds, then every message until none is left."""
        traced = kind != "plain"
        clock = Clock(ORCHESTRATOR, 0) if traced else None
        clocks = {spec.id: Clock(spec.id, spec.index) for spec in self.circuit.specs()} if kind == "clocks" else {}
        queue: deque[tuple[str, bytes]] = deque()

        def send(name: str, message: BaseModel) -> None:
            payload = encode(message)
            self.bytes += len(payload)
            queue.append((name, payload))

        for leaf in self.circuit.leaves:
            feed = Feed(circuit=DEPLOYMENT, sender=ORCHESTRATOR, run=run, value=self.inputs.get(leaf))
            send(topic(DEPLOYMENT, "feed", leaf), feed if clock is None else with_clock(feed, clock.send()))
        output = topic(DEPLOYMENT, "fwd", self.circuit.output)
        while queue:
            name, payload = queue.popleft()
            if name == output:
                seed = Backward(circuit=DEPLOYMENT, sender=ORCHESTRATOR, run=run, port=0, grad=1.0)
                seed = seed if clock is None else with_clock(seed, clock.send())
                send(topic(DEPLOYMENT, "grad", self.circuit.output), seed)
            for gate in self.hearers.get(name, ()):
                message, outgoing = self.cores[gate].receive(name, payload)
                batch: list[tuple[str, BaseModel]] = [(out.topic, out.message) for out in outgoing]
                if clocks and message is not None and message.clock is not None:
                    gate_clock = clocks[gate]
                    gate_clock.merge(message.clock)
                    batch = [(name, with_clock(out, gate_clock.send())) for name, out in batch]
                elif traced and message is not None:
                    tracer = self.tracers[gate]
                    traced_run, batch, facts = tracer.step(name, message, batch)
                    if traced_run is not None:
                        for _, events in tracer.batch(traced_run, facts):
                            events.model_dump_json()
                for out_name, out in batch:
                    send(out_name, out)


def gate_work(circuit: Circuit, passes: int, rounds: int) -> str:
    replay = Replay(circuit)
    replay.tracing()
    kinds: tuple[Kind, ...] = ("plain", "clocks", "traced")
    best = dict.fromkeys(kinds, float("inf"))
    data = dict.fromkeys(kinds, 0)
    for round_ in range(rounds):
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:
            replay.bytes = 0
            start = time.process_time()
            for i in range(passes):
                replay.run(f"{kind}{round_}-{i}", kind)
            best[kind] = min(best[kind], (time.process_time() - start) / passes * 1e6)
            data[kind] = replay.bytes // passes
    plain, clocks, traced = best["plain"], best["clocks"], best["traced"]
    return (
        f"the gates' work per pass, in memory: plain {plain:.0f} us, traced {traced:.0f} us "
        f"({traced / plain:.2f}x, {traced - plain:.0f} us more), the clocks alone {clocks:.0f} us "
        f"({clocks - plain:.0f} us more); data messages per pass {data['plain']:,} bytes plain, "
        f"{data['traced']:,} traced"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gates", type=int, default=60, help="the size of the layered circuit")
    parser.add_argument("--passes", type=int, default=15, help="passes per round")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    circuit = wide_circuit(args.gates)
    print(f"{len(circuit.gates)} gates ({circuit.name})")
    print(" ", one_message(circuit))
    print(" ", gate_work(circuit, args.passes, args.rounds))


if __name__ == "__main__":
    main()
