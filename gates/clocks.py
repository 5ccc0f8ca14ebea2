"""Logical clocks, exactly as the textbook has them: a Lamport clock and a vector clock per node.

Rules (Lamport 1978; Fidge and Mattern 1988), for a node p:

- every event at p ticks p: `lamport += 1` and `vc[p] += 1`;
- a send is an event; the message carries the clock as it is after that tick (`Stamp`);
- a receive of stamp s first merges, then ticks:
  `lamport = max(lamport, s.lamport) + 1`, `vc[q] = max(vc[q], s.vc[q])` for every q, then `vc[p] += 1`.

So a send's stamp is < its receive's in both clocks, and `a` happened before `b` exactly when
`vc(a) <= vc(b)` component-wise and they differ. Pure: no I/O, no time, no randomness.

A vector clock is the textbook's array indexed by process: the nodes of a deployment are
numbered once, at deployment (the orchestrator 0, the gates 1, 2, ... in the circuit's order:
orchestrator/circuit.py, Circuit.nodes), a gate is told its own number with its spec
(GateSpec.index), and `vc[i]` is node i's count. A gate needs no other node's name to merge, and
a message's clock is a JSON list of ints: at 60 gates two fifths of the bytes and half the
decoding time of an object naming every node (docs/benchmarks.md, Tracing). The list ends at its
last non-zero entry. Traces name the nodes again (`named`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MAX_COUNT = 2**53 - 1
"""The largest count a clock may carry: the largest integer JavaScript (the web page) and ShiViz
read exactly. A pass ticks each node a few times; only a forged clock comes near it."""
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
M = TypeVar("M", bound=BaseModel)
MAX_NODES = 1 << 20
"""Nodes a deployment may number: a bound on every vector a message or a batch may carry."""


class Stamp(BaseModel):
    """The clock a message carries (the optional `clock` field of a run's messages)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    lamport: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    vc: Annotated[list[Count], Field(max_length=MAX_NODES)]
    """By node number: vc[i] is node i's count."""


class Clock:
    """One node's Lamport clock and vector clock.

    `tick`, `send` and `receive` return the clock after the event as a Stamp (a copy of the
    vector). A gate records every event but sends a Stamp only with a message, so it uses
    `advance` and `merge` instead: they return only the entries of `vc` the event changed, by
    node number (a vector only grows, so those and the previous vector make the new one), which
    costs the same at 3 gates and at 1,000 (gates/tracing.py).
    """

    __slots__ = ("index", "lamport", "node", "vc")

    def __init__(self, node: str, index: int) -> None:
        self.node = node
        self.index = index
        """The node's number: its entry in every vector."""
        self.lamport = 0
        self.vc: list[int] = [0] * (index + 1)

    def tick(self) -> Stamp:
        """A local event (a computation, a fault, a timeout): returns the clock after it."""
        self.advance()
        return self.stamp()

    def send(self) -> Stamp:
        """A send is an event; its stamp travels on the message."""
        return self.tick()

    def receive(self, stamp: Stamp) -> Stamp:
        """Merge the message's stamp, then tick: the receive is an event of this node."""
        self.merge(stamp)
        return self.stamp()

    def advance(self) -> dict[int, int]:
        """tick without a Stamp: the one entry that changed, the node's own."""
        self.lamport += 1
        index = self.index
        count = self.vc[index] = self.vc[index] + 1
        return {index: count}

    def merge(self, stamp: Stamp) -> dict[int, int]:
        """receive without a Stamp: the entries the message raised, then the node's own."""
        own, other = self.vc, stamp.vc
        if len(other) > len(own):
            own += [0] * (len(other) - len(own))
        changed = {i: count for i, count in enumerate(other) if count > own[i]}
        for i, count in changed.items():
            own[i] = count
        self.lamport = max(self.lamport, stamp.lamport) + 1  # the merge, then the receive's tick
        index = self.index
        changed[index] = own[index] = own[index] + 1
        return changed

    def stamp(self) -> Stamp:
        # the fields are this clock's own (ints, a fresh list): validating them again would cost
        # a pass over the whole vector per event
        return trusted(Stamp, {"lamport": self.lamport, "vc": self.vc.copy()}, _STAMP_FIELDS)


def named(vc: Sequence[int], names: Sequence[str]) -> dict[str, int]:
    """A vector by node name, its zero entries left out (as a trace has it). ValueError if
    it has more entries than the deployment has nodes."""
    if len(vc) > len(names):
        raise ValueError(f"a vector clock of {len(vc)} entries, for {len(names)} nodes")
    return {names[i]: count for i, count in enumerate(vc) if count}


_STAMP_FIELDS = frozenset(Stamp.model_fields)
_setattr = object.__setattr__


def trusted(cls: type[M], values: dict[str, Any], fields_set: set[str] | frozenset[str]) -> M:
    """A model made of values already valid, every field given: what pydantic's model_construct
    does, without its per-field loop (a third of the time; a traced gate makes two per send)."""
    model = cls.__new__(cls)
    _setattr(model, "__dict__", values)
    _setattr(model, "__pydantic_fields_set__", set(fields_set))
    _setattr(model, "__pydantic_extra__", None)
    _setattr(model, "__pydantic_private__", None)
    return model


def happened_before(a: dict[str, int], b: dict[str, int]) -> bool:
    """a -> b: every entry of a is <= b's, and they are not equal."""
    return a != b and all(count <= b.get(node, 0) for node, count in a.items())


def concurrent(a: dict[str, int], b: dict[str, int]) -> bool:
    return a != b and not happened_before(a, b) and not happened_before(b, a)
