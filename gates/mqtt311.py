"""MQTT 3.1.1 spoken directly on an asyncio.Protocol: the shared connection's fast path.

aiomqtt (over paho) stays the client everywhere else. On the shared connection, where one
process carries thousands of gates, its per-message costs were the limit (profiled with
py-spy, see docs/benchmarks.md): paho reads every packet with three `recv` calls and wakes
the event loop through a thread-safe callback for every write, and aiomqtt adds a task per
received message and an Event plus `wait_for` per publish. A Session instead parses every
packet a read brought, writes once per event-loop turn, and keeps unacknowledged publishes
in a dict; publishing never waits for the broker.

It does only what the shared connection needs: a clean-session CONNECT (credentials, TLS),
PUBLISH both ways at QoS 1 (or, for a host started with `--qos 0`, QoS 0), SUBSCRIBE,
UNSUBSCRIBE and keep-alive pings. A publish the broker
has not acknowledged when the connection drops is handed back by `undelivered()`, so that
the next connection sends it again: at least once, as everywhere in gatemesh.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import ssl
from collections.abc import Callable
from typing import Literal

from aiomqtt import MqttError

from gates.transport import BrokerAddress, check_granted

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

IN_FLIGHT = 1000
"""Publishes awaiting their PUBACK at once; later ones wait in the backlog, in order."""
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


def remaining_length(size: int) -> bytes:
    """The variable-length integer (7 bits per byte, low bits first) of MQTT's fixed header."""
    encoded = bytearray()
    while True:
        size, digit = divmod(size, 128)
        encoded.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(encoded)


def packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes((first_byte,)) + remaining_length(len(body)) + body


def utf8(text: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    encoded = text.encode()
    return len(encoded).to_bytes(2, "big") + encoded


def connect_packet(client_id: str, keepalive: int, username: str | None, password: str | None) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)  # clean session
    parts = [utf8("MQTT"), bytes((4, flags)), keepalive.to_bytes(2, "big"), utf8(client_id)]
    parts += [utf8(value) for value in (username, password) if value is not None]
    return packet(CONNECT, *parts)


def publish_packet(topic: str, payload: bytes, packet_id: int | None, *, retain: bool = False) -> bytes:
    """QoS 1 with a packet id, QoS 0 without one."""
    if packet_id is None:
        return packet(PUBLISH | (0x01 if retain else 0), utf8(topic), payload)
    return packet(PUBLISH | 0x02 | (0x01 if retain else 0), utf8(topic), packet_id.to_bytes(2, "big"), payload)


def subscribe_packet(packet_id: int, filters: list[str], qos: QoS = 1) -> bytes:
    return packet(SUBSCRIBE, packet_id.to_bytes(2, "big"), *(utf8(name) + bytes((qos,)) for name in filters))


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    return packet(UNSUBSCRIBE, packet_id.to_bytes(2, "big"), *(utf8(name) for name in filters))


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete packet from the front of `buffer`: (first byte, body) each."""
    found: list[tuple[int, bytes]] = []
    position, end = 0, len(buffer)
    while end - position >= 2:
        size, multiplier, index = 0, 1, position + 1
        while index < end:
            digit = buffer[index]
            index += 1
            size += (digit & 0x7F) * multiplier
            if digit < 0x80:
                break
            multiplier *= 128
            if multiplier > 128**3:
                raise MqttError("malformed packet: remaining length longer than 4 bytes")
        else:
            break  # the length itself is incomplete
        if index + size > end:
            break
        found.append((buffer[position], bytes(buffer[index : index + size])))
        position = index + size
    del buffer[:position]
    return found


class Session(asyncio.Protocol):
    """One MQTT 3.1.1 connection; `open()` it, then publish, subscribe and await `lost`."""

    def __init__(self, on_message: Callable[[str, bytes], None], keepalive: float, timeout: float, qos: QoS) -> None:
        self.on_message = on_message
        self.qos = qos
        self.keepalive = keepalive
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[MqttError] = self.loop.create_future()
        """Resolves (with the error to raise) when the connection ends."""
        self.writable = asyncio.Event()
        """Set while publishing is welcome: cleared when the socket's buffer or the backlog is full."""
        self.writable.set()
        self.unacked: dict[int, tuple[Publication, Confirmation]] = {}
        self.backlog: collections.deque[tuple[Publication, Confirmation]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._flush_pending = False
        self._paused = False
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[bytes]] = {}
        """packet id (0 for CONNACK) -> the body of the acknowledgement awaited."""
        self._pong = True
        self._ping: asyncio.TimerHandle | None = None
        self.retained_copy = False
        """While `on_message` runs: whether the broker flagged the message as a retained copy sent for a
        new subscription (MQTT-3.3.1-8), not a live one (a host reading assignments back needs this)."""

    @classmethod
    async def open(
        cls,
        broker: BrokerAddress,
        on_message: Callable[[str, bytes], None],
        *,
        keepalive: float = 2.0,
        timeout: float = 10.0,
        qos: QoS = 1,
    ) -> Session:
        """Connect and wait for the broker's CONNACK; MqttError if it cannot be reached or refuses."""
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context(cafile=broker.ca_file) if broker.tls else None
        session = cls(on_message, keepalive, timeout, qos)
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
            raise MqttError(f"no CONNACK from {broker} within {timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, or a TLS failure (ssl.SSLError)
            raise MqttError(f"cannot connect to {broker}: {exc}") from exc
        if len(body) != 2 or body[1] != 0:
            session.close()
            code = body[1] if len(body) == 2 else -1
            raise MqttError(f"{broker} refused the connection: {CONNACK_REFUSALS.get(code, f'code {code}')}")
        session._ping = loop.call_later(keepalive, session._keep_alive)
        return session

    # -- what the shared connection and the runner call

    def publish(self, topic: str, payload: bytes, retain: bool = False, *, confirm: bool = False) -> Confirmation:
        """Queue a publish at the session's QoS; it is written in this loop turn or, at QoS 1 with
        IN_FLIGHT publishes unacknowledged, after the next PUBACK.

        With `confirm` (QoS 1), returns a future that resolves on the broker's PUBACK (or fails
        with MqttError if the connection ends first).
        """
        if self.qos == 0:  # at most once: nothing to track, nothing to confirm
            self._send(publish_packet(topic, payload, None, retain=retain))
            return None
        confirmation: Confirmation = self.loop.create_future() if confirm else None
        if self.lost.done() and confirmation is not None:
            confirmation.set_exception(self.lost.result())
        elif len(self.unacked) < IN_FLIGHT and not self.backlog:
            self._transmit((topic, payload, retain), confirmation)
        else:
            self.backlog.append(((topic, payload, retain), confirmation))
            self._update_writable()
        return confirmation

    async def subscribe(self, filters: list[str]) -> None:
        """Subscribe at the session's QoS; MqttError naming every filter the broker refused (an ACL, say)."""
        packet_id = self._new_id()
        self._send(subscribe_packet(packet_id, filters, self.qos))
        check_granted(filters, (await self._reply(packet_id, "SUBACK"))[2:])

    async def unsubscribe(self, filters: list[str]) -> None:
        packet_id = self._new_id()
        self._send(unsubscribe_packet(packet_id, filters))
        await self._reply(packet_id, "UNSUBACK")

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
        error = MqttError(f"connection lost: {exc}" if exc else "connection closed")
        if self._ping is not None:
            self._ping.cancel()
        waiters: list[asyncio.Future[bytes] | asyncio.Future[None]] = [*self._replies.values()]
        waiters += [confirmation for _, confirmation in (*self.unacked.values(), *self.backlog) if confirmation]
        for waiting in waiters:
            if not waiting.done():
                waiting.set_exception(error)
                waiting.exception()  # retrieved here: the waiter is told through its own await
        if not self.lost.done():
            self.lost.set_result(error)
        self.writable.set()  # publishers must not hang on a dead session; `lost` tells the owner

    def pause_writing(self) -> None:
        self._paused = True
        self._update_writable()

    def resume_writing(self) -> None:
        self._paused = False
        self._update_writable()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            packets = split_packets(self._buffer)
        except MqttError as exc:
            self._abort(exc)
            return
        for first, body in packets:
            if self.lost.done():  # aborted by an earlier packet of this read
                return
            kind = first & 0xF0
            if kind == PUBLISH:
                self._received_publish(first, body)
            elif kind == PUBACK:
                self._acknowledged(int.from_bytes(body[:2], "big"))
            elif kind in (SUBACK, UNSUBACK, CONNACK):
                waiting = self._replies.pop(0 if kind == CONNACK else int.from_bytes(body[:2], "big"), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(body)
            elif kind == PINGRESP:
                self._pong = True
            else:
                self._abort(MqttError(f"unexpected packet type 0x{first:02x} from the broker"))
                return

    # -- internals

    def _received_publish(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        size = int.from_bytes(body[:2], "big")
        try:
            name = body[2 : 2 + size].decode()
        except UnicodeDecodeError:
            self._abort(MqttError("a PUBLISH from the broker has a topic that is not UTF-8"))
            return
        start = 2 + size
        if qos:
            self._send(bytes((PUBACK, 2)) + body[start : start + 2])
            start += 2
        self.retained_copy = bool(first & 0x01)
        self.on_message(name, body[start:])

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

    def _transmit(self, publication: Publication, confirmation: Confirmation) -> None:
        packet_id = self._new_id()
        self.unacked[packet_id] = (publication, confirmation)
        topic, payload, retain = publication
        self._send(publish_packet(topic, payload, packet_id, retain=retain))

    def _new_id(self) -> int:
        """The next packet id (1..65535) that no unacknowledged publish or awaited reply holds."""
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.unacked and self._next_id not in self._replies:
                return self._next_id

    def _send(self, data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one loop turn goes in one write."""
        self._outgoing.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def _expect(self, packet_id: int) -> asyncio.Future[bytes]:
        waiting: asyncio.Future[bytes] = self.loop.create_future()
        self._replies[packet_id] = waiting
        return waiting

    async def _reply(self, packet_id: int, kind: str) -> bytes:
        if self.lost.done():
            raise self.lost.result()
        waiting = self._expect(packet_id)
        try:
            async with asyncio.timeout(self.timeout):
                return await waiting
        except TimeoutError:
            raise MqttError(f"no {kind} within {self.timeout:g} s") from None
        finally:
            self._replies.pop(packet_id, None)

    def _update_writable(self) -> None:
        if self._paused or len(self.backlog) > BACKLOG_HIGH:
            self.writable.clear()
        else:
            self.writable.set()

    def _keep_alive(self) -> None:
        """Ping every `keepalive` seconds; a ping unanswered by the next one means the link is dead."""
        if not self._pong:
            self._abort(MqttError(f"no PINGRESP within {self.keepalive:g} s: the connection is dead"))
            return
        self._pong = False
        self._send(bytes((PINGREQ, 0)))
        self._ping = self.loop.call_later(self.keepalive, self._keep_alive)

    def _abort(self, error: MqttError) -> None:
        if not self.lost.done():
            self.lost.set_result(error)
        if self._transport is not None:
            self._transport.abort()
