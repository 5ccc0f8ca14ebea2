"""MQTT 3.1.1 spoken directly on an asyncio.Protocol: the data plane's session.

It carries the shared connection of a gate host's gates, the orchestrator's runner
(orchestrator/runner.py), the recorder's tap (orchestrator/tap.py, at QoS 0), the training
engine (orchestrator/tensor_mesh.py) and step mode's network actor (web/stepper.py). aiomqtt
(over paho) carries the control plane and a gate on a connection of its own
(gates/transport.py). On the shared connection, where one
process carries thousands of gates, aiomqtt's per-message costs were the limit (profiled with
py-spy, see docs/benchmarks.md): paho reads every packet with three `recv` calls and wakes
the event loop through a thread-safe callback for every write, and aiomqtt adds a task per
received message and an Event plus `wait_for` per publish. A Session instead parses every
packet a read brought, writes once per event-loop turn, and keeps unacknowledged publishes
in a dict; publishing never waits for the broker.

It does only what those need: a clean-session CONNECT (credentials, TLS),
PUBLISH both ways at QoS 1 (or, for a host started with `--qos 0`, QoS 0), SUBSCRIBE,
UNSUBSCRIBE and keep-alive pings. A publish the broker
has not acknowledged when the connection drops is handed back by `undelivered()`, so that
the next connection sends it again: at least once, as everywhere in gatemesh.

It trusts nothing it reads: a length over MAX_PACKET, a PUBLISH at QoS 2 or 3, an
acknowledgement of the wrong size (see `malformed`) is a ProtocolViolation that drops the
connection, and it never sends an empty SUBSCRIBE or a packet id in use. Every failure is a
gates.errors.TransportError. The packets themselves, as bytes, are gates/mqtt_codec.py's.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Literal

from gates.errors import ConnectionLost, ProtocolViolation, TransportError, connack_refusal, unreachable
from gates.mqtt_codec import (
    CONNACK,
    DISCONNECT,
    MAX_PACKET,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    connect_packet,
    malformed,
    publish_packet,
    published,
    split_packets,
    subscribe_packet,
    unsubscribe_packet,
)
from gates.transport import BrokerAddress, check_granted

IN_FLIGHT = 1000
"""Publishes awaiting their PUBACK at once; later ones wait in the backlog, in order."""
LATER = 0.005
"""Seconds a publish sent `later` waits at most for another write to go with."""
BACKLOG_HIGH = 10_000
"""Publishers are paused (`writable` cleared) while more than this many wait in the backlog."""
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}

QoS = Literal[0, 1]
Publication = tuple[str, bytes, bool]
"""(topic, payload, retain) of one QoS 1 publish."""
Confirmation = asyncio.Future[None] | None
"""Resolved when the broker acknowledges a publish, for a publisher that asked to know."""


class Session(asyncio.Protocol):
    """One MQTT 3.1.1 connection; `open()` it, then publish, subscribe and await `lost`.

    Every failure is a gates.errors.TransportError: ConnectionLost (no connection, a broken
    one, or no answer in time), Refused (CONNACK or SUBACK said no) or ProtocolViolation (the
    broker's bytes break MQTT; the connection is dropped at once).
    """

    def __init__(
        self,
        on_message: Callable[[str, bytes], None],
        keepalive: float,
        timeout: float,
        qos: QoS,
        *,
        max_packet: int = MAX_PACKET,
        peer: str | None = None,
    ) -> None:
        self.on_message = on_message
        self.qos = qos
        self.keepalive = keepalive
        self.timeout = timeout
        self.max_packet = max_packet
        self.address = peer
        """The broker's URL once `open` made the connection (None: a session given its transport)."""
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[TransportError] = self.loop.create_future()
        """Resolves (with the error to raise) when the connection ends."""
        self._error: TransportError | None = None
        """Why the connection ended (kept here too: an owner may cancel its wait on `lost`)."""
        self.writable = asyncio.Event()
        """Set while publishing is welcome: cleared when the socket's buffer or the backlog is full."""
        self.writable.set()
        self.unacked: dict[int, tuple[Publication, Confirmation]] = {}
        self.backlog: collections.deque[tuple[Publication, Confirmation]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._flush_pending = False
        self._later: list[bytes] = []
        self._later_timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[bytes]] = {}
        """packet id (0 for CONNACK) -> the body of the acknowledgement awaited."""
        self._pong = True
        self._heard = False
        """Whether anything arrived since the last ping (see _keep_alive)."""
        self._ping: asyncio.TimerHandle | None = None
        self._capture: Callable[[int, bytes], None] | None = None
        """Where every byte read goes unparsed, once `capture` is called (a tap's session)."""
        self.retained_copy = False
        """While `on_message` runs: whether the broker flagged the message as a retained copy sent for a
        new subscription (MQTT-3.3.1-8), not a live one (a host reading assignments back needs this)."""

    @property
    def peer(self) -> str:
        """Who is at the other end, for messages."""
        return self.address or "the broker"

    @classmethod
    async def open(
        cls,
        broker: BrokerAddress,
        on_message: Callable[[str, bytes], None],
        *,
        keepalive: float = 2.0,
        timeout: float = 10.0,
        qos: QoS = 1,
        max_packet: int = MAX_PACKET,
    ) -> Session:
        """Connect and wait for the broker's CONNACK: ConnectionLost if it cannot be reached in
        time, Refused if it says no, ProtocolViolation if its answer is not a CONNACK."""
        loop = asyncio.get_running_loop()
        context = broker.tls_context()
        session = cls(on_message, keepalive, timeout, qos, max_packet=max_packet, peer=str(broker))
        connack = session._expect(0)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: session, broker.host, broker.port, ssl=context)
                identifier = f"gatemesh-session-{secrets.token_hex(6)}"
                keepalive_s = max(1, round(keepalive * 3))  # the broker's limit: we ping every `keepalive`
                session._send(connect_packet(identifier, keepalive_s, broker.username, broker.password))
                body = await connack
        except TimeoutError:
            session.close()
            msg = f"no CONNACK from {broker} within {timeout:g} s"
            raise ConnectionLost(msg, broker=str(broker)) from None
        except OSError as exc:  # refused, unreachable, or a TLS failure (ssl.SSLError)
            msg = f"cannot connect to the broker at {broker}: {unreachable(exc)}"
            raise ConnectionLost(msg, broker=str(broker)) from exc
        except BaseException:  # a TransportError, or cancelled while it connected: no socket is left open
            session.close()
            raise
        if body[1] != 0:  # its size was checked on arrival
            session.close()
            msg = f"{broker} refused the connection: {CONNACK_REFUSALS.get(body[1], f'code {body[1]}')}"
            raise connack_refusal(msg, body[1], str(broker))
        session._ping = loop.call_later(keepalive, session._keep_alive)
        return session

    # -- what the shared connection and the runner call

    def publish(
        self, topic: str, payload: bytes, retain: bool = False, *, confirm: bool = False, later: bool = False
    ) -> Confirmation:
        """Queue a publish at the session's QoS; it is written in this loop turn or, at QoS 1 with
        IN_FLIGHT publishes unacknowledged, after the next PUBACK.

        With `confirm` (QoS 1), returns a future that resolves on the broker's PUBACK (or fails
        with the TransportError that ended the connection first). With `later`, it is written with
        the next write anything else makes, or LATER seconds from now: a message nobody waits for
        (a gate's trace events) costs no write of its own.
        """
        if self.qos == 0:  # at most once: nothing to track, nothing to confirm
            self._send(publish_packet(topic, payload, None, retain=retain), later=later)
            return None
        confirmation: Confirmation = self.loop.create_future() if confirm else None
        if self._error is not None and confirmation is not None:
            confirmation.set_exception(self._error)
        elif len(self.unacked) < IN_FLIGHT and not self.backlog:
            self._transmit((topic, payload, retain), confirmation, later=later)
        else:
            self.backlog.append(((topic, payload, retain), confirmation))
            self._update_writable()
        return confirmation

    async def publish_all(
        self, batch: Sequence[tuple[str, bytes]], retain: bool = False, *, confirm: bool = True
    ) -> None:
        """Publish `batch`; with `confirm`, return once the broker has acknowledged every one:
        TimeoutError past the session's timeout and a millisecond a message (the broker takes
        in a large batch at its own pace), its words "acknowledged no publish within N s"."""
        waiting = [self.publish(name, payload, retain, confirm=confirm) for name, payload in batch]
        if not confirm:
            return
        limit = self.timeout + 0.001 * len(batch)
        try:
            async with asyncio.timeout(limit):
                for confirmation in waiting:
                    if confirmation is not None:
                        await confirmation
        except TimeoutError:
            raise TimeoutError(f"acknowledged no publish within {limit:g} s") from None

    async def subscribe(self, filters: list[str]) -> None:
        """Subscribe at the session's QoS; Refused naming every filter the broker refused (an ACL, say)."""
        if not filters:
            msg = "a SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-3)"
            raise ValueError(msg)
        packet_id = self._new_id()
        self._send(subscribe_packet(packet_id, filters, self.qos))
        check_granted(filters, (await self._reply(packet_id, "SUBACK"))[2:])

    async def unsubscribe(self, filters: list[str]) -> None:
        if not filters:
            msg = "an UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)"
            raise ValueError(msg)
        packet_id = self._new_id()
        self._send(unsubscribe_packet(packet_id, filters))
        await self._reply(packet_id, "UNSUBACK")

    def capture(self, sink: Callable[[int, bytes], None]) -> None:
        """From now on hand every byte read to `sink` as it is read, with the time (ns), unparsed:
        first any partial packet already buffered, then each read. For a QoS 0 subscriber that
        only records what crosses the broker (orchestrator/tap.py): it owes the broker no
        PUBACK, and a PINGRESP, read or not, shows the link alive (`_keep_alive` counts any read)."""
        if self.qos != 0:
            msg = "only a QoS 0 session can capture: a QoS 1 delivery needs its PUBACK"
            raise ValueError(msg)
        self._capture = sink
        if self._buffer:
            sink(time.time_ns(), bytes(self._buffer))
            self._buffer.clear()

    def undelivered(self) -> list[Publication]:
        """Every publish not yet acknowledged, in the order it was made: to send again elsewhere."""
        return [publication for publication, _ in (*self.unacked.values(), *self.backlog)]

    def close(self) -> None:
        """Say DISCONNECT (so the broker drops no will and logs no error) and close."""
        if self._transport is not None and not self._transport.is_closing():
            self._send(bytes((DISCONNECT, 0)))
            self._flush()
            self._transport.close()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(ConnectionLost(f"the connection to {self.peer} broke: {exc}", broker=self.address))
        else:
            self._fail(ConnectionLost(f"the connection to {self.peer} closed", broker=self.address))

    def pause_writing(self) -> None:
        self._paused = True
        self._update_writable()

    def resume_writing(self) -> None:
        self._paused = False
        self._update_writable()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if self._capture is not None:
            self._capture(time.time_ns(), data)
            return
        self._buffer += data
        try:
            packets = split_packets(self._buffer, self.max_packet)
        except ProtocolViolation as exc:
            self._abort(ProtocolViolation(f"{self.peer}: {exc}", broker=self.address))
            return
        for first, body in packets:
            if self._error is not None:  # aborted by an earlier packet of this read
                return
            problem = malformed(first, body)
            if problem is not None:
                self._abort(ProtocolViolation(f"{self.peer} sent {problem}", broker=self.address))
                return
            kind = first & 0xF0
            if kind == PUBLISH:
                self._received_publish(first, body)
            elif kind == PUBACK:
                self._acknowledged(int.from_bytes(body, "big"))
            elif kind == PINGRESP:
                self._pong = True
            else:  # SUBACK, UNSUBACK, CONNACK
                waiting = self._replies.pop(0 if kind == CONNACK else int.from_bytes(body[:2], "big"), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(body)

    # -- internals

    def _received_publish(self, first: int, body: bytes) -> None:
        """A PUBLISH that `malformed` passed: QoS 0 or 1, its topic and packet id all there."""
        try:
            name, packet_id, payload = published(first, body)
        except UnicodeDecodeError:
            self._abort(ProtocolViolation(f"{self.peer} sent a PUBLISH whose topic is not UTF-8", broker=self.address))
            return
        if packet_id:
            self._send(bytes((PUBACK, 2)) + packet_id)
        self.retained_copy = bool(first & 0x01)
        self.on_message(name, payload)

    def _acknowledged(self, packet_id: int) -> None:
        entry = self.unacked.pop(packet_id, None)
        if entry is None:
            return
        confirmation = entry[1]
        if confirmation is not None and not confirmation.done():
            confirmation.set_result(None)
        while self.backlog and len(self.unacked) < IN_FLIGHT:
            self._transmit(*self.backlog.popleft())
        self._update_writable()

    def _transmit(self, publication: Publication, confirmation: Confirmation, *, later: bool = False) -> None:
        packet_id = self._new_id()
        self.unacked[packet_id] = (publication, confirmation)
        topic, payload, retain = publication
        self._send(publish_packet(topic, payload, packet_id, retain=retain), later=later)

    def _new_id(self) -> int:
        """The next packet id (1..65535, never 0) that no unacknowledged publish or awaited reply holds.

        IN_FLIGHT bounds the publishes that hold one, so a free id is always found.
        """
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.unacked and self._next_id not in self._replies:
                return self._next_id
        msg = "all 65,535 packet ids are in use"
        raise RuntimeError(msg)

    def _send(self, data: bytes, *, later: bool = False) -> None:
        """Queue bytes for the socket; everything queued in one loop turn goes in one write (and
        what is sent `later`, with the next write, or LATER seconds from now)."""
        if later:
            self._later.append(data)
            if self._later_timer is None:
                self._later_timer = self.loop.call_later(LATER, self._flush)
            return
        self._outgoing.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._later:
            self._outgoing += self._later
            self._later.clear()
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        if self._outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def _expect(self, packet_id: int) -> asyncio.Future[bytes]:
        waiting: asyncio.Future[bytes] = self.loop.create_future()
        self._replies[packet_id] = waiting
        return waiting

    async def _reply(self, packet_id: int, kind: str) -> bytes:
        """The body of the acknowledgement of `packet_id`. A broker that does not send it within
        the timeout is taken for dead: the connection is dropped (ConnectionLost)."""
        if self._error is not None:
            raise self._error
        waiting = self._expect(packet_id)
        try:
            async with asyncio.timeout(self.timeout):
                return await waiting
        except TimeoutError:
            self._abort(ConnectionLost(f"no {kind} from {self.peer} within {self.timeout:g} s", broker=self.address))
            raise self._ended() from None
        finally:
            self._replies.pop(packet_id, None)

    def _update_writable(self) -> None:
        if self._paused or len(self.backlog) > BACKLOG_HIGH:
            self.writable.clear()
        else:
            self.writable.set()

    def _keep_alive(self) -> None:
        """Ping every `keepalive` seconds; a ping unanswered by the next one, with nothing else heard
        meanwhile, means the link is dead. Whatever arrives counts: a subscriber that a flood keeps
        behind (`gatemesh serve` hearing a 65,000-gate pass's 190,000 messages) reads its PINGRESP
        only after the messages the broker queued before it, and its link is alive all along."""
        if not self._pong and not self._heard:
            msg = f"no PINGRESP from {self.peer} within {self.keepalive:g} s: the link is dead"
            self._abort(ConnectionLost(msg, broker=self.address))
            return
        self._pong = self._heard = False
        self._send(bytes((PINGREQ, 0)))
        self._ping = self.loop.call_later(self.keepalive, self._keep_alive)

    def _abort(self, error: TransportError) -> None:
        """End the connection at once, without DISCONNECT: `error` is what everyone waiting is told."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _ended(self) -> TransportError:
        assert self._error is not None, "the connection has not ended"
        return self._error

    def _fail(self, error: TransportError) -> None:
        """The connection is over: the first error given is `lost`'s, and every waiter's."""
        if self._error is None:
            self._error = error
        error = self._error
        if not self.lost.done():
            self.lost.set_result(error)
        if self._ping is not None:
            self._ping.cancel()
        if self._later_timer is not None:
            self._later_timer.cancel()
        waiters: list[asyncio.Future[bytes] | asyncio.Future[None]] = [*self._replies.values()]
        waiters += [confirmation for _, confirmation in (*self.unacked.values(), *self.backlog) if confirmation]
        for waiting in waiters:
            if not waiting.done():
                waiting.set_exception(error)
                waiting.exception()  # retrieved here: the waiter is told through its own await
        self.writable.set()  # publishers must not hang on a dead session; `lost` tells the owner
