"""The page's pictures of a run, from its trace, by the same functions `gatemesh draw` uses.

`pictures` is called with a snapshot of the trace (an immutable Trace) off the event loop, a
few times a second at most; a circuit too large to draw gets a summary line instead (viz/
refuses it with the reason, which the page shows), and so does a Lamport diagram of too many
events. Counting what crossed the broker (`Progress`) is cheap and works at any size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.circuit import Circuit
from orchestrator.trace import Trace
from viz.caption import caption
from viz.circuit import MAX_GATES, draw_circuit, state_at
from viz.lamport import MAX_GATES as LAMPORT_MAX_GATES
from viz.lamport import draw_lamport
from viz.svg import DrawError


@dataclass
class Progress:
    """What crossed the broker so far in this run, by phase; what a pass will send in all.

    A message is counted once: a second copy of one (a duplicate's) is a copy, not a message of
    the pass, so a dropped message is never made up for by another's copy. Where a message's
    identity is not known (a counted run: its bytes are not decoded), what crossed beyond what
    a phase sends is taken for copies."""

    expected: dict[str, int]
    crossed: Counter[str] = field(default_factory=Counter)
    copies: int = 0
    """Second copies of messages already counted."""
    seen: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, circuit: Circuit) -> Progress:
        return cls(circuit.messages_by_phase())

    def count(self, phase: str, message: str | None = None) -> None:
        """A message of `phase` crossed; `message`: its identity, if known (a trace's message id).
        A probe, its answers and errors are not the pass's: not counted, nor their copies."""
        if phase not in self.expected:
            return
        if message is not None:
            if message in self.seen:
                self.copies += 1
                return
            self.seen.add(message)
        self.crossed[phase] += 1

    def view(self) -> dict[str, object]:
        """Each phase up to what a pass sends, and the second copies."""
        total = sum(self.expected.values())
        done = {p: min(self.crossed[p], n) for p, n in self.expected.items()}
        return {
            "phases": [{"phase": p, "crossed": done[p], "expected": n} for p, n in self.expected.items()],
            "crossed": sum(done.values()),
            "expected": total,
            "copies": self.copies + sum(self.crossed[p] - done[p] for p in self.expected),
        }


__all__ = ["MAX_GATES", "NO_PICTURES", "Pictures", "Progress", "bare_circuit", "drawable", "pictures", "summary"]


def summary(circuit: Circuit, placement: Mapping[str, str]) -> dict[str, object]:
    """The circuit counted, for the page at any size: gates, edges, inputs, messages a pass, how
    many gates of each op (most first) and on each host ("local": in the server's process)."""
    ops = Counter(g.op for g in circuit.gates)
    hosts = Counter(placement.get(g.id, "local") for g in circuit.gates)
    return {
        "gates": len(circuit.gates),
        "edges": sum(len(g.inputs) for g in circuit.gates),
        "inputs": len(circuit.inputs),
        "messages": circuit.messages_per_pass(),
        "ops": dict(ops.most_common()),
        "hosts": dict(sorted(hosts.items())),
    }


def drawable(circuit: Circuit) -> bool:
    return len(circuit.gates) <= MAX_GATES


def bare_circuit(circuit: Circuit, title: str) -> str:
    """The circuit before any message: every number blank."""
    return draw_circuit(circuit, caption=title)


Pictures = tuple[str, str, str, str]
"""(circuit SVG, why not, Lamport SVG, why not)."""
NO_PICTURES: Pictures = ("", "", "", "")


def pictures(trace: Trace, run: str, title: str) -> Pictures:
    """(circuit SVG, why not, Lamport SVG, why not) for `run` as far as the trace goes."""
    circuit_svg = circuit_note = lamport_svg = lamport_note = ""
    try:
        circuit_svg = draw_circuit(trace.circuit, state_at(trace, run), caption=title or caption(trace, run))
    except DrawError as exc:
        circuit_note = str(exc)
    if len(trace.circuit.gates) > LAMPORT_MAX_GATES:
        lamport_note = (
            f"{len(trace.circuit.gates)} gates: the Lamport diagram stays readable up to {LAMPORT_MAX_GATES} "
            "columns; the progress above counts the messages instead"
        )
    elif any(e.run == run for e in trace.events):
        try:
            lamport_svg = draw_lamport(trace, run, caption=title or caption(trace, run))
        except DrawError as exc:
            lamport_note = str(exc)
    return circuit_svg, circuit_note, lamport_svg, lamport_note
