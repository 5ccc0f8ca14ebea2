"""Step mode: the messages of a held run wait at the broker until someone delivers them.

A run is held when its messages say `"held": true` (an optional field, absent otherwise, so an
unheld run's payloads are byte for byte what they always were). A gate that handles a held
message publishes its own data messages for that run (forward values, gradients, reports) with
the flag, to the run's *held* topic instead of the real one:

    gatemesh/C/fwd/G   ->  gatemesh/C/held/fwd/G
    gatemesh/C/grad/G  ->  gatemesh/C/held/grad/G
    gatemesh/C/report/G -> gatemesh/C/held/report/G
    gatemesh/C/feed/G  ->  gatemesh/C/held/feed/G   (the orchestrator's feeds)

Nothing reads a held topic but a network actor (web/stepper.py), which lists what waits there
and, told to deliver one, republishes its exact payload to the real topic (drop: discards it;
duplicate: publishes it once and lists a second copy, to deliver or drop later). The gate knows
nothing of who holds its messages or why: it only copies the flag from what it received onto
what it sends. Errors, status answers, trace batches and control messages are never held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from gates.protocol import ROOT, Backward, Feed, Forward, GradReport, TopicKind, parse_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gates.actor import Link

HELD_KEY = b'"held":true'
"""How a held run's payload is told from any other without parsing it (a gate reads `held`
from the message its core decoded)."""
HELD_KINDS: tuple[TopicKind, ...] = ("feed", "fwd", "grad", "report")
HELD_LEVEL = "held"


def held_topic(topic_name: str) -> str | None:
    """The held topic of a data topic (`gatemesh/C/fwd/G` -> `gatemesh/C/held/fwd/G`), else None."""
    parsed = parse_topic(topic_name)
    if parsed is None or parsed[1] not in HELD_KINDS:
        return None
    circuit, kind, gate = parsed
    return f"{ROOT}/{circuit}/{HELD_LEVEL}/{kind}/{gate}"


def real_topic(held: str) -> str | None:
    """The topic a held message is delivered to (`gatemesh/C/held/fwd/G` -> `gatemesh/C/fwd/G`), else None."""
    parts = held.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != HELD_LEVEL or parts[3] not in HELD_KINDS:
        return None
    real = f"{ROOT}/{parts[1]}/{parts[3]}/{parts[4]}"
    return real if parse_topic(real) is not None else None


def held_filter(circuit: str) -> str:
    """The subscription filter for every held message of `circuit`."""
    return f"{ROOT}/{circuit}/{HELD_LEVEL}/#"


def hold(batch: list[tuple[str, BaseModel]]) -> list[tuple[str, BaseModel]]:
    """The batch with its data messages flagged and sent to their held topics (the rest as it is).

    Every data message a step produces belongs to the run of the message that caused the step
    (another run's eviction is an error report, never held)."""
    out: list[tuple[str, BaseModel]] = []
    for name, message in batch:
        held = held_topic(name)
        if held is not None and isinstance(message, Feed | Forward | Backward | GradReport):
            out.append((held, message.model_copy(update={"held": True})))
        else:
            out.append((name, message))
    return out


class HeldLink:
    """A gate's link for one step of a held run: the data messages it publishes are held."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:  # pragma: no cover - a step only publishes
        raise NotImplementedError("a held link only publishes")

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False, later: bool = False) -> None:
        await self.link.publish(hold(batch), retain=retain, later=later)
