"""The embedded broker's mends to amqtt 0.12's table of subscriptions (broker/subscriptions.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broker.launch import embedded
from broker.subscriptions import Broadcasts, Subscriptions
from gates.mqtt311 import Session
from gates.transport import BrokerAddress


def test_the_subscriptions_table_may_change_while_it_is_looped_over() -> None:
    """amqtt awaits inside `for topic in self._subscriptions` (and `.items()`); a client that
    subscribed meanwhile raised "dictionary changed size during iteration" and cost the
    connecting client its connection. The table now loops over what it held when the loop began."""
    table = Subscriptions({"a/+": [], "b/#": []})
    seen: list[str] = []
    for topic in table:
        table[f"{topic}/more"] = []  # another client subscribes
        seen.append(topic)
    for topic, _ in table.items():
        del table[topic]  # the last client of each filter leaves
    assert seen == ["a/+", "b/#"]
    assert table == {}
    assert table.wildcards == {}


async def test_a_message_is_tried_only_against_its_own_topic_and_the_wildcards() -> None:
    """amqtt tried every filter for every message: 13 million tries for a 1,200-gate pass."""
    table = Subscriptions({"g/fwd/a": ["A"], "g/fwd/b": ["B"], "g/+/b": ["W"], "g/+/c": []})
    table.setdefault("g/#", ["H"])
    queue = Broadcasts(table)
    queue.put_nowait({"topic": "g/fwd/b", "data": b""})
    await queue.get()  # what amqtt does right before it loops over the table
    assert table.items() == [("g/fwd/b", ["B"]), ("g/+/b", ["W"]), ("g/#", ["H"])]  # g/+/c: no one left
    assert len(table.items()) == 5  # any other loop sees the whole table
    queue.put_nowait({"topic": "g/fwd/c", "data": b""})
    await queue.get()
    async with asyncio.TaskGroup() as group:  # another task's loop
        elsewhere = group.create_task(asyncio.to_thread(lambda: len(table.items())))
    assert elsewhere.result() == 5
    assert table.items() == [("g/+/b", ["W"]), ("g/#", ["H"])]  # amqtt matches these itself
    table.pop("g/#")
    assert table.wildcards == {"g/+/b": None, "g/+/c": None}


class Client:
    """A session that keeps what it hears; `settled()` returns once everything sent before has come."""

    def __init__(self, broker: BrokerAddress, name: str) -> None:
        self.broker, self.name = broker, name
        self.got: list[tuple[str, bytes]] = []
        self._marker = asyncio.Event()
        self.session: Session | None = None

    def _hear(self, topic: str, payload: bytes) -> None:
        if topic == f"marker/{self.name}":
            self._marker.set()
        else:
            self.got.append((topic, payload))

    async def open(self, filters: list[str]) -> None:
        self.session = await Session.open(self.broker, self._hear)
        await self.session.subscribe([*filters, f"marker/{self.name}"])

    async def settled(self, sender: Session) -> list[tuple[str, bytes]]:
        """A marker through the broker after what `sender` sent: the broker hands messages on in order."""
        self._marker.clear()
        sender.publish(f"marker/{self.name}", b"")
        async with asyncio.timeout(5):
            await self._marker.wait()
        return self.got


@asynccontextmanager
async def clients(mended: bool, *names: str) -> AsyncIterator[tuple[BrokerAddress, list[Client]]]:
    async with embedded(mended=mended) as url:
        broker = BrokerAddress.parse(url)
        made = [Client(broker, name) for name in names]
        try:
            yield broker, made
        finally:
            for client in made:
                if client.session is not None:
                    client.session.close()


async def routed(mended: bool) -> dict[str, list[tuple[str, bytes]]]:
    """Who gets what: an exact subscriber, a wildcard one, one with both, and one of another topic."""
    async with clients(mended, "sender", "exact", "wild", "both", "other") as (_, made):
        sender, exact, wild, both, other = made
        await sender.open([])
        await exact.open(["g/fwd/a"])
        await wild.open(["g/+/a"])
        await both.open(["g/fwd/a", "g/#"])
        await other.open(["g/fwd/b"])
        assert sender.session is not None
        for name in ("g/fwd/a", "g/fwd/b", "g/grad/a", "h/fwd/a"):
            sender.session.publish(name, name.encode())
        return {c.name: sorted(await c.settled(sender.session)) for c in made[1:]}


async def test_every_subscriber_gets_what_it_got_from_amqtt_as_it_is() -> None:
    mended = await routed(mended=True)
    assert mended == await routed(mended=False)
    assert mended["exact"] == [("g/fwd/a", b"g/fwd/a")]
    assert mended["wild"] == [("g/fwd/a", b"g/fwd/a"), ("g/grad/a", b"g/grad/a")]
    assert [topic for topic, _ in mended["both"]] == ["g/fwd/a", "g/fwd/a", "g/fwd/b", "g/grad/a"]  # one a filter
    assert mended["other"] == [("g/fwd/b", b"g/fwd/b")]


async def test_a_connecting_client_gets_only_the_retained_messages_it_subscribes_to() -> None:
    """amqtt sent a new client the retained messages of every filter anyone had subscribed to
    (before it heard anything else: the marker comes after them)."""
    async with clients(True, "first", "second") as (_, (first, second)):
        await first.open(["t/a"])
        assert first.session is not None
        first.session.publish("t/a", b"kept", retain=True)
        await first.settled(first.session)
        await second.open([])
        assert await second.settled(first.session) == []  # it subscribed to nothing
        assert second.session is not None
        await second.session.subscribe(["t/+"])
        assert await second.settled(first.session) == [("t/a", b"kept")]  # what it subscribes to, it gets
