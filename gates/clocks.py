"""Logical clocks, exactly as the textbook has them: a Lamport clock and a vector clock per node.

Rules (Lamport 1978; Fidge and Mattern 1988), for a node p:

- every event at p ticks p: `lamport += 1` and `vc[p] += 1`;
- a send is an event; the message carries the clock as it is after that tick (`Stamp`);
- a receive of stamp s first merges, then ticks:
  `lamport = max(lamport, s.lamport) + 1`, `vc[q] = max(vc[q], s.vc[q])` for every q, then `vc[p] += 1`.

So a send's stamp is < its receive's in both clocks, and `a` happened before `b` exactly when
`vc(a) <= vc(b)` component-wise and they differ. Pure: no I/O, no time, no randomness.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=0)]


class Stamp(BaseModel):
    """The clock a message carries (the optional `clock` field of a run's messages)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lamport: Annotated[int, Field(ge=1)]
    vc: dict[str, Count]


class Clock:
    """One node's Lamport clock and vector clock."""

    __slots__ = ("lamport", "node", "vc")

    def __init__(self, node: str) -> None:
        self.node = node
        self.lamport = 0
        self.vc: dict[str, int] = {}

    def tick(self) -> Stamp:
        """A local event (a computation, a fault, a timeout): returns the clock after it."""
        self.lamport += 1
        self.vc[self.node] = self.vc.get(self.node, 0) + 1
        return self.stamp()

    def send(self) -> Stamp:
        """A send is an event; its stamp travels on the message."""
        return self.tick()

    def receive(self, stamp: Stamp) -> Stamp:
        """Merge the message's stamp, then tick: the receive is an event of this node."""
        self.lamport = max(self.lamport, stamp.lamport)
        for node, count in stamp.vc.items():
            if count > self.vc.get(node, 0):
                self.vc[node] = count
        return self.tick()

    def stamp(self) -> Stamp:
        return Stamp(lamport=self.lamport, vc=dict(self.vc))


def happened_before(a: dict[str, int], b: dict[str, int]) -> bool:
    """a -> b: every entry of a is <= b's, and they are not equal."""
    return a != b and all(count <= b.get(node, 0) for node, count in a.items())


def concurrent(a: dict[str, int], b: dict[str, int]) -> bool:
    return a != b and not happened_before(a, b) and not happened_before(b, a)
