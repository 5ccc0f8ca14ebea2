"""The embedded broker's mends to amqtt 0.12's table of subscriptions (broker/subscriptions.py)."""

from __future__ import annotations

import asyncio

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
    table = Subscriptions({"g/fwd/a": ["A"], "g/fwd/b": ["B"], "g/+/b": ["W"]})
    table["g/#"] = ["H"]
    queue = Broadcasts(table)
    queue.put_nowait({"topic": "g/fwd/b", "data": b""})
    await queue.get()  # what amqtt does right before it loops over the table
    assert table.items() == [("g/fwd/b", ["B"]), ("g/+/b", ["W"]), ("g/#", ["H"])]
    assert len(table.items()) == 4  # any other loop sees the whole table
    queue.put_nowait({"topic": "g/fwd/c", "data": b""})
    await queue.get()
    assert table.items() == [("g/+/b", ["W"]), ("g/#", ["H"])]  # amqtt matches these itself


async def test_a_connecting_client_gets_only_the_retained_messages_it_subscribes_to() -> None:
    """amqtt sent a new client the retained messages of every filter anyone had subscribed to."""
    async with embedded() as url:
        broker = BrokerAddress.parse(url)
        got: list[tuple[str, bytes]] = []
        arrived = asyncio.Event()

        def keep(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            arrived.set()

        first = await Session.open(broker, lambda topic, payload: None)
        second: Session | None = None
        try:
            await first.subscribe(["t/a"])
            first.publish("t/a", b"kept", retain=True)
            await asyncio.sleep(0.2)
            second = await Session.open(broker, keep)
            await asyncio.sleep(0.3)
            assert got == []  # it subscribed to nothing
            await second.subscribe(["t/+"])
            async with asyncio.timeout(5):
                await arrived.wait()
            assert got == [("t/a", b"kept")]  # what it subscribes to, it gets
        finally:
            first.close()
            if second is not None:
                second.close()
