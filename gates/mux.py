"""Many gates over one MQTT connection, each gate still its own actor with its own mailbox.

One connection per gate is the picture the notes draw, and it is what per-gate credentials
need, but it does not scale: every gate costs a socket, a paho client and an event-loop
reader, and the broker a session. A SharedConnection carries any number of gates over one
MQTT 3.1.1 session of its own (gates/mqtt311.py):

- subscriptions are reference-counted: a topic several gates read is subscribed once;
- the one reader routes each incoming message to the mailbox of every gate subscribed to
  its topic; each gate's actor drains its own mailbox in order, so a gate
  still sees its messages one at a time and keeps its state to itself;
- publishing hands messages to the session without waiting for the broker; after a lost
  connection it reconnects, resubscribes every topic, sends again whatever the broker had not
  acknowledged, and the gates carry on with their state.

Every message still crosses the broker: sharing a socket changes the plumbing, not the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import NoReturn

from pydantic import BaseModel

from gates.errors import Refused, SubscriptionRefused, TransportError
from gates.lifecycle import stay_connected
from gates.mqtt311 import Publication, QoS, Session
from gates.transport import BrokerAddress, encode

SUBSCRIBE_BATCH = 500
"""Topic filters per SUBSCRIBE packet."""


def refused_of(exc: Refused, batch: list[str]) -> tuple[str, ...] | list[str]:
    """The filters of `batch` a refusal names (every one, if it names none)."""
    return exc.filters if isinstance(exc, SubscriptionRefused) else batch


class Mailbox:
    """One gate's link on a shared connection: its own mailbox in, the shared session out.

    Not an asyncio.Queue: an idle Queue holds three deques and an Event (about 3 KB), which
    at 65,000 gates is most of their memory. A list while letters wait, and one future while
    the gate waits, do.
    """

    __slots__ = ("_letters", "_waiter", "refused", "shared", "topics", "unconfirmed")

    def __init__(self, shared: SharedConnection, topics: list[str]) -> None:
        self.shared = shared
        self.topics = tuple(sys.intern(name) for name in dict.fromkeys(topics))  # one copy of a shared topic
        self.unconfirmed = 0
        """Topics of this mailbox whose subscription the broker has not acknowledged yet."""
        self.refused: TransportError | None = None
        """A subscription the broker refused, perhaps before the gate began to wait (the
        connection's task sends the SUBSCRIBE as soon as it is asked): `subscribed` raises it."""
        self._letters: list[tuple[str, bytes]] | None = None  # a list only while letters wait
        self._waiter: asyncio.Future[None] | None = None
        """What the gate awaits: its subscriptions while it attaches, then its next letter."""

    async def __aenter__(self) -> Mailbox:
        """Routed and subscribed: every subscription is acknowledged when this returns."""
        try:
            await self.shared.attach(self)
        except BaseException:
            await self.shared.detach(self)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shared.detach(self)

    async def subscribed(self) -> None:
        """Return once every topic of this mailbox is acknowledged (Refused if one was refused)."""
        while self.unconfirmed and self.refused is None:  # a letter on a topic confirmed before wakes it too
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.refused is not None:
            raise self.refused

    def confirmed(self, error: TransportError | None = None) -> None:
        """One of this mailbox's subscriptions was acknowledged, or failed with `error`."""
        self.unconfirmed -= 1
        if error is not None and self.refused is None:
            self.refused = error
        if self._waiter is not None and not self._waiter.done():
            if error is not None:
                self._waiter.set_exception(error)
            elif not self.unconfirmed:
                self._waiter.set_result(None)

    def lost(self, error: TransportError) -> None:
        """The broker refused one of this mailbox's topics on a new connection: the gate hears it
        when it next waits for a letter (and reattaches, asking again)."""
        self.refused = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def deliver(self, name: str, payload: bytes) -> None:
        if self._letters is None:
            self._letters = [(name, payload)]
        else:
            self._letters.append((name, payload))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        """The gate's messages in order of arrival, one at a time."""
        while True:
            if self._letters is None:
                if self.refused is not None:
                    raise self.refused
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            letters, self._letters = self._letters or [], None
            for letter in letters:
                yield letter

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False, later: bool = False) -> None:
        await self.shared.publish(batch, retain=retain, later=later)


class SharedConnection:
    """One MQTT connection for many gate actors; run `serve()` in a task, then open links."""

    def __init__(self, broker: BrokerAddress, *, qos: QoS = 1) -> None:
        self.broker = broker
        self.qos = qos
        """1: at least once (the protocol's default). 0: at most once, for measuring and for showing
        what a lost message does; the orchestrator's retries are then what completes a run."""
        self._session: Session | None = None
        self.connected = asyncio.Event()
        self._routes: dict[str, list[Mailbox]] = {}
        self._unconfirmed: set[str] = set()
        """Routed topics whose subscription the broker has not acknowledged yet (none, once all gates run)."""
        self._unsent: list[str] = []
        self._asked = asyncio.Event()
        """Topics were added to `_unsent`: the connection's own task sends them (`_subscriptions`)."""
        self._in_flight: set[str] = set()
        """The topics of the SUBSCRIBE awaiting its SUBACK that still have a reader. One whose last
        reader leaves meanwhile is unsubscribed (`detach`): that SUBACK no longer speaks for it,
        and a gate that reads it again must have it subscribed again."""
        self._undelivered: list[Publication] = []
        """What the broker had not acknowledged when the last connection dropped: sent first on the next."""

    @property
    def session(self) -> Session:
        """The current connection (only while `connected` is set)."""
        assert self._session is not None, "the shared connection is not serving"
        return self._session

    @property
    def gates(self) -> int:
        return len({id(box) for boxes in self._routes.values() for box in boxes})

    async def serve(self, started: asyncio.Future[None] | None = None) -> NoReturn:
        """Hold the connection, reconnecting and resubscribing; route every message to its mailboxes.

        `started` resolves once the first connection is up. Publishes the broker had not
        acknowledged when a connection dropped are sent again on the next one, before any new publish.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(self._subscriptions())
            await stay_connected(
                lambda: Session.open(self.broker, self._route, qos=self.qos),
                up=self._up,
                down=self._down,
                started=started,
                name=f"shared connection to {self.broker}",
            )

    async def _up(self, session: Session) -> None:
        """A new connection: resend, resubscribe every routed topic, then let the gates publish."""
        for publication in self._undelivered:
            session.publish(*publication)
        self._undelivered = []
        topics = list(self._routes)  # every topic any gate reads, acknowledged or not
        refusals: dict[str, Refused] = {}
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = topics[start : start + SUBSCRIBE_BATCH]
            try:
                await session.subscribe(batch)
            except Refused as exc:  # its gates hear it; the others' topics hold (not: reconnect forever)
                refusals.update(dict.fromkeys(refused_of(exc, batch), exc))
        done = set(topics)
        self._unsent = [name for name in self._unsent if name not in done]  # asked for meanwhile
        for name in topics:
            if name in refusals:
                self._refuse(name, refusals[name])
            else:
                self._confirm(name)
        self._session = session
        self.connected.set()
        self._asked.set()  # topics asked for while the connection was down

    def _down(self, session: Session | None, error: TransportError | None) -> None:
        self._disconnected()  # first: nobody may publish into the dead session from here on
        if session is not None:
            self._undelivered = session.undelivered()

    def _confirm(self, name: str, error: TransportError | None = None) -> None:
        """The broker acknowledged (or refused) `name`: tell each mailbox that waits for it."""
        if name not in self._unconfirmed:  # no reader any more, or acknowledged already
            return
        self._unconfirmed.discard(name)
        if not self._unconfirmed:  # a set keeps the table it grew to: 65,000 gates' worth, for nothing
            self._unconfirmed = set()
        boxes = self._routes.get(name, [])
        if error is not None:  # unrouted now: its gates fail, and retrying asks for it again
            del self._routes[name]
        for box in boxes:
            box.confirmed(error)

    def _refuse(self, name: str, error: Refused) -> None:
        """The broker refused `name` on a new connection: unroute it, and tell its gates, those
        still waiting to attach and those that ran with it."""
        if name in self._unconfirmed:
            self._confirm(name, error)
            return
        for box in self._routes.pop(name, ()):
            box.lost(error)

    def _disconnected(self) -> None:
        self.connected.clear()
        self._session = None

    def _route(self, name: str, payload: bytes) -> None:
        for box in self._routes.get(name, ()):
            box.deliver(name, payload)

    def link(self, topics: list[str]) -> Mailbox:
        """A gate's mailbox for `topics`, to enter (a class, not a generator: it is kept per gate)."""
        return Mailbox(self, topics)

    async def attach(self, box: Mailbox) -> None:
        """Route the mailbox's topics to it; return once the broker acknowledged each subscription.

        A gate waits on one future of its own, not on one per topic: at 65,000 gates starting
        at once, per-topic waits were tens of megabytes of short-lived objects.
        """
        for name in box.topics:
            boxes = self._routes.get(name)
            if boxes is None:  # the first gate to read this topic asks for it, for all its readers
                boxes = self._routes[name] = []
                self._unconfirmed.add(name)
                self._unsent.append(name)
            boxes.append(box)
            if name in self._unconfirmed:  # including topics another gate asked for
                box.unconfirmed += 1
        if self._unsent:  # if not connected, serve() subscribes every routed topic once it is
            self._asked.set()
        await box.subscribed()

    async def _subscriptions(self) -> NoReturn:
        """Send the topics gates are waiting for, many per SUBSCRIBE packet, as they are asked for.

        The connection's own work, not the gates': 65,000 gates attaching cost a few hundred
        round trips, not 65,000 concurrent ones (which time out), and a gate cancelled while it
        attaches (its host undeploys it) takes no other gate's subscriptions with it.
        """
        while True:
            await self._asked.wait()
            self._asked.clear()
            while self._unsent and self.connected.is_set():
                batch, self._unsent = self._unsent[:SUBSCRIBE_BATCH], self._unsent[SUBSCRIBE_BATCH:]
                batch = [name for name in batch if name in self._unconfirmed]  # skip topics every reader left
                if not batch:  # every gate that wanted these left meanwhile: no empty SUBSCRIBE (MQTT-3.8.3-3)
                    continue
                self._in_flight = set(batch)
                try:
                    await self.session.subscribe(batch)
                except Refused as exc:  # the filters granted with it are subscribed
                    refused = set(refused_of(exc, batch))
                    for name in batch:
                        if name in self._in_flight:
                            self._confirm(name, exc if name in refused else None)
                    continue
                except TransportError:  # the session is gone; the next one subscribes every routed topic
                    break
                finally:
                    answered, self._in_flight = self._in_flight, set()
                for name in batch:
                    if name in answered:
                        self._confirm(name)

    async def detach(self, box: Mailbox) -> None:
        """Unroute the mailbox; topics no gate reads any more are unsubscribed."""
        gone = []
        for name in box.topics:
            boxes = self._routes.get(name)
            if boxes is None or box not in boxes:  # unrouted already: its subscription was refused
                continue
            boxes.remove(box)
            if not boxes:  # the last gate reading this topic left
                del self._routes[name]
                self._unconfirmed.discard(name)
                self._in_flight.discard(name)
                gone.append(name)
        if gone and self.connected.is_set():
            with contextlib.suppress(TransportError):
                await self.session.unsubscribe(gone)

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False, later: bool = False) -> None:
        """Hand the batch to the connection, which sends it at least once, across reconnections too.

        Returns without waiting for the broker's acknowledgements; waits only while the
        connection is down or its send buffer is full. `later`: with the session's next write
        (Session.publish), for what nobody waits for (a gate's trace events).
        """
        await self.publish_raw([(name, encode(message)) for name, message in batch], retain=retain, later=later)

    async def publish_raw(
        self, payloads: list[tuple[str, bytes]], *, retain: bool = False, later: bool = False
    ) -> None:
        """`publish` for payloads already encoded (the binary frames of tensor gates)."""
        while True:
            if not self.connected.is_set():
                await self.connected.wait()
            session = self.session
            if not session.writable.is_set():
                await session.writable.wait()
            if session is self._session:  # still the live connection after any wait
                break
        for name, payload in payloads:
            session.publish(name, payload, retain, later=later)
