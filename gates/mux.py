"""Many gates over one MQTT connection, each gate still its own actor with its own mailbox.

One connection per gate is the picture the notes draw, and it is what per-gate credentials
need, but it does not scale: every gate costs a socket, a paho client and an event-loop
reader, and the broker a session. A SharedConnection carries any number of gates:

- subscriptions are reference-counted: a topic several gates read is subscribed once;
- the one reader routes each incoming message to the mailbox (an asyncio.Queue) of every
  gate subscribed to its topic; each gate's actor drains its own mailbox in order, so a gate
  still sees its messages one at a time and keeps its state to itself;
- publishing goes through the shared client; after a lost connection the link reconnects,
  resubscribes every topic, and the gates carry on with their state.

Every message still crosses the broker: sharing a socket changes the plumbing, not the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import NoReturn

import aiomqtt
from pydantic import BaseModel

from gates.actor import Link
from gates.lifecycle import RECONNECT_DELAYS, Backoff
from gates.transport import BrokerAddress, client, publish_all, subscribe_all

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 3.0
"""Seconds to wait for a PUBACK before publishing again: a connection that died under a publish
never acknowledges it, and aiomqtt would wait its full 10 s (a resend is a harmless duplicate)."""
SUBSCRIBE_BATCH = 500
"""Topic filters per SUBSCRIBE packet when resubscribing after a reconnection."""


class Mailbox:
    """One gate's link on a shared connection: its own queue in, the shared client out."""

    def __init__(self, shared: SharedConnection) -> None:
        self.shared = shared
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self.queue.get()

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False) -> None:
        await self.shared.publish(batch, retain=retain)


class SharedConnection:
    """One MQTT connection for many gate actors; run `serve()` in a task, then open links."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.broker = broker
        self._mqtt: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self._routes: dict[str, list[Mailbox]] = {}
        self._subscribed: Counter[str] = Counter()
        self._acked: dict[str, asyncio.Future[None]] = {}
        """topic -> done once the broker acknowledged its subscription."""
        self._unsent: list[str] = []
        self._flushing = False

    @property
    def mqtt(self) -> aiomqtt.Client:
        """The current connection (only while `connected` is set)."""
        assert self._mqtt is not None, "the shared connection is not serving"
        return self._mqtt

    @property
    def gates(self) -> int:
        return len({id(box) for boxes in self._routes.values() for box in boxes})

    async def serve(self) -> NoReturn:
        """Hold the connection, reconnecting and resubscribing; route every message to its mailboxes."""
        backoff = Backoff()
        while True:
            self._mqtt = client(self.broker)
            try:
                async with self._mqtt:
                    topics = list(self._subscribed)
                    for start in range(0, len(topics), SUBSCRIBE_BATCH):
                        await subscribe_all(self.mqtt, topics[start : start + SUBSCRIBE_BATCH])
                    self._unsent.clear()  # every topic any gate reads is subscribed now
                    for acked in self._acked.values():
                        if not acked.done():
                            acked.set_result(None)
                    self.connected.set()
                    backoff.reset()
                    async for message in self._mqtt.messages:
                        raw = message.payload
                        payload = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
                        for box in self._routes.get(message.topic.value, ()):
                            box.queue.put_nowait((message.topic.value, payload))
            except aiomqtt.MqttError as exc:
                self.connected.clear()  # before sleeping: nobody may publish through the dead client
                delay = backoff.next()
                log.warning("shared connection to %s lost (%s); reconnecting in %g s", self.broker, exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    @contextlib.asynccontextmanager
    async def link(self, key: str, topics: list[str]) -> AsyncIterator[Link]:
        """A gate's mailbox, routed `topics`; every subscription is acknowledged before it is yielded."""
        box = Mailbox(self)
        loop = asyncio.get_running_loop()
        wanted = list(dict.fromkeys(topics))
        for name in wanted:
            if name not in self._acked:  # the first gate to read this topic has it subscribed for all
                self._acked[name] = loop.create_future()
                self._unsent.append(name)
            self._subscribed[name] += 1
            self._routes.setdefault(name, []).append(box)
        try:
            await self.connected.wait()
            await self._flush_subscriptions()
            for name in wanted:  # including topics another gate asked for: wait for their SUBACK too
                acked = self._acked.get(name)
                if acked is None:
                    raise aiomqtt.MqttError(f"the subscription to {name} failed")
                await asyncio.shield(acked)
            yield box
        finally:
            await self._detach(box, topics)

    async def _flush_subscriptions(self) -> None:
        """Send the topics gates are waiting for, many per SUBSCRIBE packet.

        Whichever gate finds topics waiting sends them all, in batches; the others only wait
        for their topics' acknowledgements. 65,000 gates cost a few hundred round trips, not
        65,000 concurrent ones (which time out).
        """
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._unsent and self.connected.is_set():
                batch, self._unsent = self._unsent[:SUBSCRIBE_BATCH], self._unsent[SUBSCRIBE_BATCH:]
                batch = [name for name in batch if name in self._acked]  # skip topics every reader left
                try:
                    await subscribe_all(self.mqtt, batch)
                except aiomqtt.MqttError as exc:
                    for name in batch:  # their gates fail and retry, which asks again
                        acked = self._acked.pop(name, None)
                        if acked is not None and not acked.done():
                            acked.set_exception(exc)
                            acked.exception()  # retrieved: the gates see the failure through _acked
                    continue
                for name in batch:
                    acked = self._acked.get(name)
                    if acked is not None and not acked.done():
                        acked.set_result(None)
        finally:
            self._flushing = False

    async def _detach(self, box: Mailbox, topics: list[str]) -> None:
        gone = []
        for name in dict.fromkeys(topics):
            self._routes[name].remove(box)
            self._subscribed[name] -= 1
            if self._subscribed[name] == 0:
                del self._subscribed[name], self._routes[name]
                acked = self._acked.pop(name, None)
                if acked is not None and not acked.done():
                    acked.cancel()
                gone.append(name)
        if gone and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await self.mqtt.unsubscribe(gone)

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False) -> None:
        """Publish through the shared client; across a reconnection, wait and try again (at least once)."""
        while True:
            await self.connected.wait()
            try:
                await publish_all(self.mqtt, batch, retain=retain, timeout=PUBLISH_TIMEOUT)
                return
            except aiomqtt.MqttError as exc:
                log.info("publish failed (%s); retrying after the reconnection", exc)
                await asyncio.sleep(RECONNECT_DELAYS[0])
