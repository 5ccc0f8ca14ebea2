"""The data plane's session without a broker: gates/mqtt_codec.py's encoding against the byte
layouts the specification gives, and gates/mqtt311.Session's strictness about what it reads,
on a fake transport that records every write."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from gates import mqtt311
from gates.errors import ConnectionLost, ProtocolViolation, unreachable
from gates.mqtt311 import Session
from gates.mqtt_codec import (
    MAX_PACKET,
    PINGREQ,
    PINGRESP,
    PUBACK,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    connect_packet,
    publish_packet,
    published,
    remaining_length,
    split_packets,
    subscribe_packet,
)
from gates.mux import SharedConnection
from gates.transport import BrokerAddress
from tests.tasks import cancelled, caught

# MQTT 3.1.1, section 2.2.3, table 2.4: the boundaries of each remaining-length size.
SPEC_LENGTHS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("size", "encoded"), SPEC_LENGTHS)
def test_remaining_length_matches_the_specification_table(size: int, encoded: str) -> None:
    assert remaining_length(size).hex() == encoded


def test_connect_packet_layout() -> None:
    # fixed header, "MQTT", level 4, flags (clean session), keep-alive 60, client id "c" (section 3.1)
    assert connect_packet("c", 60, None, None).hex() == "100d00044d5154540402003c000163"
    # user name and password flags (0x80, 0x40), then both strings after the client id
    with_credentials = "1013" + "00044d515454" + "04c2003c" + "000163" + "000175" + "000170"
    assert connect_packet("c", 60, "u", "p").hex() == with_credentials


def test_publish_packet_layout_at_qos_1_and_0() -> None:
    # 0x32: PUBLISH, QoS 1; topic "a/b"; packet id 10; payload "hi" (section 3.3)
    assert publish_packet("a/b", b"hi", 10).hex() == "3209" + "0003612f62" + "000a" + "6869"
    assert publish_packet("a/b", b"hi", 10, retain=True).hex()[:2] == "33"
    # QoS 0 has no packet id
    assert publish_packet("a/b", b"hi", None).hex() == "3007" + "0003612f62" + "6869"


def test_subscribe_packet_layout() -> None:
    # 0x82 (the reserved bits are 0010), packet id 1, then each filter with its requested QoS (section 3.8)
    assert subscribe_packet(1, ["a", "b/#"]).hex() == "820c" + "0001" + "00016101" + "0003622f2301"
    assert subscribe_packet(1, ["a"], qos=0).hex() == "8206" + "0001" + "00016100"


def test_split_packets_takes_whole_packets_and_keeps_the_rest_whatever_the_chunking() -> None:
    packets = [publish_packet(f"t/{i}", bytes(i * 40), i + 1) for i in range(1, 8)]  # lengths up to 2 bytes
    stream = b"".join(packets) + bytes.fromhex("4002")  # and half a PUBACK
    for chunk in (1, 2, 3, 7, 64, len(stream)):
        buffer = bytearray()
        found = []
        for start in range(0, len(stream), chunk):
            buffer += stream[start : start + chunk]
            found += split_packets(buffer)
        assert [bytes((first,)) + remaining_length(len(body)) + body for first, body in found] == packets
        assert buffer == bytes.fromhex("4002")


def test_a_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(ProtocolViolation, match="remaining length"):
        split_packets(bytearray(bytes.fromhex("30ffffffff7f")))


# -- the session on a fake transport -------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Records what the session writes; an abort or close ends the connection as a real one does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.writes: list[bytes] = []
        """Each write, as it was made."""
        self.aborted = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def abort(self) -> None:
        self.aborted = True
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def close(self) -> None:
        self.closed = True
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    async def sent(self) -> list[tuple[int, bytes]]:
        """Every packet written so far (after letting the session flush this loop turn's writes)."""
        await asyncio.sleep(0)
        return split_packets(bytearray(self.written), 2**28)


Received = list[tuple[str, bytes]]


def connected(max_packet: int = MAX_PACKET) -> tuple[Session, FakeTransport, Received]:
    """A session past its CONNACK on a fake transport, and what it hands on."""
    received: Received = []
    session = Session(lambda topic, payload: received.append((topic, payload)), 60, 5, 1, max_packet=max_packet)
    transport = FakeTransport(session)
    session.connection_made(transport)
    return session, transport, received


async def violation(session: Session, transport: FakeTransport, match: str) -> None:
    """The session found a protocol violation matching `match` and dropped the connection."""
    await asyncio.sleep(0)
    assert session.lost.done()
    with pytest.raises(ProtocolViolation, match=match):
        raise session.lost.result()
    assert transport.aborted


def ids_of(packets: list[tuple[int, bytes]], kind: int) -> list[int]:
    """The packet ids of every packet of `kind` (a PUBLISH's follows its topic; the others' lead)."""
    found = []
    for first, body in packets:
        if first & 0xF0 == kind:
            at = 2 + int.from_bytes(body[:2], "big") if kind == 0x30 else 0
            found.append(int.from_bytes(body[at : at + 2], "big"))
    return found


async def test_a_declared_length_over_the_limit_drops_the_connection_before_its_body_arrives() -> None:
    session, transport, received = connected(max_packet=1000)
    session.data_received(bytes((0x30,)) + remaining_length(1001))  # the header alone: no body is awaited
    await violation(session, transport, "declares 1,001 bytes, over the 1,000-byte limit")
    assert received == []


async def test_a_packet_at_the_limit_is_read() -> None:
    session, _, received = connected(max_packet=1000)
    packet = publish_packet("t", bytes(997), None)  # 2 + 1 + 997 = 1000 bytes of body
    session.data_received(packet)
    assert received == [("t", bytes(997))]
    assert not session.lost.done()


def test_the_default_limit_is_the_brokers() -> None:
    # broker/mosquitto.conf: max_packet_size 2000000; nothing larger can come through that broker
    conf = (Path(__file__).parents[2] / "broker" / "mosquitto.conf").read_text()
    assert f"max_packet_size {MAX_PACKET}" in conf
    with pytest.raises(ProtocolViolation, match="over the 2,000,000-byte limit"):
        split_packets(bytearray(bytes((0x30,)) + remaining_length(MAX_PACKET + 1)))
    assert split_packets(bytearray(bytes((0x30,)) + remaining_length(MAX_PACKET))) == []  # waits for the body


@pytest.mark.parametrize(("first", "match"), [(0x34, "QoS 2"), (0x35, "QoS 2"), (0x36, "QoS 3"), (0x37, "QoS 3")])
async def test_a_publish_at_qos_2_or_3_is_a_protocol_violation_never_acknowledged(first: int, match: str) -> None:
    session, transport, received = connected()
    body = b"\x00\x01t" + (7).to_bytes(2, "big") + b"payload"
    session.data_received(bytes((first,)) + remaining_length(len(body)) + body)
    await violation(session, transport, match)
    assert await transport.sent() == []  # no PUBACK (nor PUBREC)
    assert received == []


async def test_a_publish_at_qos_1_is_acknowledged_and_handed_on() -> None:
    session, transport, received = connected()
    body = b"\x00\x01t" + (7).to_bytes(2, "big") + b"payload"
    session.data_received(bytes((0x32,)) + remaining_length(len(body)) + body)
    assert received == [("t", b"payload")]
    assert await transport.sent() == [(PUBACK, (7).to_bytes(2, "big"))]


async def test_a_publish_too_short_for_its_topic_is_a_protocol_violation() -> None:
    session, transport, received = connected()
    session.data_received(bytes.fromhex("3003" + "0005" + "61"))  # topic of 5 bytes, 1 present
    await violation(session, transport, "too short for its topic")
    assert received == []


async def _confirmed_publish(session: Session) -> asyncio.Future[None]:
    confirmation = session.publish("t", b"x", confirm=True)
    assert confirmation is not None
    return confirmation


@pytest.mark.parametrize(
    ("name", "start", "reply"),
    [
        ("PUBACK", "publish", "4001" + "01"),  # one byte: read as a 2-byte id it would be id 1, this publish
        ("PUBACK", "publish", "4000"),  # no id: read as id 0
        ("SUBACK", "subscribe", "9002" + "0001"),  # an id, no return code
        ("UNSUBACK", "unsubscribe", "b001" + "01"),  # one byte: it would be id 1, this unsubscribe
    ],
)
async def test_a_short_acknowledgement_is_a_protocol_violation_not_packet_id_0_or_1(
    name: str, start: str, reply: str
) -> None:
    session, transport, _ = connected()
    async with asyncio.TaskGroup() as group:
        if start == "publish":
            waiting = group.create_task(caught(await _confirmed_publish(session)))  # packet id 1
        elif start == "subscribe":
            waiting = group.create_task(caught(session.subscribe(["a"])))
        else:
            waiting = group.create_task(caught(session.unsubscribe(["a"])))
        await transport.sent()  # the request is written and its id taken
        session.data_received(bytes.fromhex(reply))
        await violation(session, transport, f"a {name} of")
        failed = await waiting
    assert isinstance(failed, ProtocolViolation)
    assert f"a {name} of" in str(failed)


@pytest.mark.parametrize(
    ("packet", "match"), [("40020000", "a PUBACK for packet id 0"), ("3205" + "000174" + "0000", "packet id 0")]
)
async def test_packet_id_0_from_the_broker_is_a_protocol_violation(packet: str, match: str) -> None:
    session, transport, received = connected()
    session.data_received(bytes.fromhex(packet))
    await violation(session, transport, match)
    assert await transport.sent() == []  # not even a PUBACK for the PUBLISH
    assert received == []


async def test_an_acknowledgement_that_never_comes_drops_the_connection() -> None:
    """No SUBACK within the timeout: the broker is taken for dead, so that whoever holds the
    session reconnects (and resubscribes) instead of waiting on a live-looking session."""
    received: Received = []
    session = Session(lambda topic, payload: received.append((topic, payload)), 60, 0.05, 1)
    transport = FakeTransport(session)
    session.connection_made(transport)
    with pytest.raises(ConnectionLost, match=r"no SUBACK from the broker within 0\.05 s"):
        await session.subscribe(["a"])
    assert transport.aborted
    assert isinstance(session.lost.result(), ConnectionLost)


async def test_a_link_is_dead_when_a_ping_goes_unanswered_and_nothing_else_arrives() -> None:
    """A PINGRESP queued behind a flood of messages is late, not missing: what arrives meanwhile
    keeps the link alive. Only silence through a whole keepalive period ends it."""
    session, transport, received = connected()
    session._keep_alive()  # the timer's work, done by hand: a ping
    session.data_received(bytes.fromhex("3003" + "0001" + "61"))  # no PINGRESP, but a QoS 0 PUBLISH on "a"
    session._keep_alive()  # behind, not dead: a second ping
    assert not session.lost.done()
    session.data_received(bytes((PINGRESP, 0)))
    session._keep_alive()  # answered: a third ping
    assert not session.lost.done()
    assert [first for first, _ in await transport.sent()] == [PINGREQ, PINGREQ, PINGREQ]
    session._keep_alive()  # nothing at all since the third
    assert transport.aborted
    with pytest.raises(ConnectionLost, match="no PINGRESP from the broker within 60 s: the link is dead"):
        raise session.lost.result()
    assert received == [("a", b"")]


async def test_a_short_connack_is_a_protocol_violation() -> None:
    """Through Session.open, from a TCP listener that answers CONNECT with a one-byte CONNACK."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(bytes.fromhex("2001" + "00"))
        await writer.drain()
        await reader.read()  # until the session drops the connection
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(ProtocolViolation, match="a CONNACK of 1 bytes"):
            await Session.open(BrokerAddress(host="127.0.0.1", port=port), lambda topic, payload: None, timeout=5)


async def test_a_subscribe_or_unsubscribe_without_filters_is_refused_before_anything_is_sent() -> None:
    session, transport, _ = connected()
    with pytest.raises(ValueError, match=r"MQTT-3\.8\.3-3"):
        await session.subscribe([])
    with pytest.raises(ValueError, match=r"MQTT-3\.10\.3-2"):
        await session.unsubscribe([])
    assert await transport.sent() == []


async def test_packet_ids_wrap_past_65535_to_1_never_0_and_skip_ids_in_use() -> None:
    session, transport, _ = connected()
    for i in range(3):
        session.publish(f"held/{i}", b"")  # ids 1, 2, 3: not acknowledged (yet)
    async with asyncio.TaskGroup() as group:
        subscribing = group.create_task(session.subscribe(["s"]))  # id 4, held while its SUBACK is awaited
        await asyncio.sleep(0)
        for _ in range(5, 65_536):  # ids 5 .. 65535, each acknowledged at once
            session.publish("t", b"")
            session.data_received(bytes((PUBACK, 2)) + max(session.unacked).to_bytes(2, "big"))
        session.data_received(bytes.fromhex("40020002"))  # id 2 is free again; 1, 3 and 4 are not
        session.publish("t", b"")
        session.publish("t", b"")
        packets = await transport.sent()
        await cancelled(subscribing)
    published = ids_of(packets, 0x30)
    assert ids_of(packets, SUBSCRIBE & 0xF0) == [4]
    assert published[:5] == [1, 2, 3, 5, 6]
    assert published[-3:] == [65535, 2, 5]  # wrapped: 1 held, 2 free, 3 held, 4 the SUBSCRIBE's
    assert 0 not in published
    assert len(published) == 3 + 65531 + 2


# -- the shared connection (gates/mux.py) on the fake transport ----------------------------


def filters_of(body: bytes, kind: int) -> list[str]:
    """The topic filters of a SUBSCRIBE's or UNSUBSCRIBE's body (after its packet id)."""
    found, at = [], 2
    while at < len(body):
        size = int.from_bytes(body[at : at + 2], "big")
        found.append(body[at + 2 : at + 2 + size].decode())
        at += 2 + size + (1 if kind == SUBSCRIBE else 0)  # a SUBSCRIBE's filter is followed by its QoS
    return found


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (polls the fake transport's bytes, which have no event)
            await asyncio.sleep(0)


async def test_a_batch_whose_gates_all_left_is_not_sent_as_an_empty_subscribe() -> None:
    """Gate A's SUBSCRIBE is in flight; gate B asks for another topic meanwhile (queued for the
    next batch) and leaves before it is sent: the next batch is empty and must not go out."""
    session, transport, _ = connected()
    shared = SharedConnection(BrokerAddress(host="127.0.0.1", port=1))
    shared._session = session  # serving on the fake transport: what serve() does once connected
    shared.connected.set()

    def written(kind: int) -> list[tuple[int, list[str]]]:
        """(packet id, filters) of every SUBSCRIBE or UNSUBSCRIBE written so far."""
        packets = split_packets(bytearray(transport.written), 2**28)
        return [(int.from_bytes(body[:2], "big"), filters_of(body, kind)) for first, body in packets if first == kind]

    async def unsubscribed(count: int) -> None:
        """Wait for the count-th UNSUBSCRIBE and acknowledge it, as the broker would."""
        await until(lambda: len(written(UNSUBSCRIBE)) == count)
        session.data_received(bytes((UNSUBACK, 2)) + written(UNSUBSCRIBE)[-1][0].to_bytes(2, "big"))

    entered = asyncio.Event()

    async def gate(topics: list[str]) -> None:
        async with shared.link(topics):
            entered.set()
            await asyncio.Event().wait()

    async with asyncio.TaskGroup() as group:
        subscribing = group.create_task(shared._subscriptions())  # the connection's own, as serve() runs it
        a = group.create_task(gate(["a"]))
        await until(lambda: len(written(SUBSCRIBE)) == 1)
        b = group.create_task(gate(["b"]))
        await until(lambda: "b" in shared._unsent)
        b.cancel()  # B leaves before "b" is sent (unsubscribing it on the way out: harmless)
        await unsubscribed(1)
        [(packet_id, filters)] = written(SUBSCRIBE)
        assert filters == ["a"]
        session.data_received(bytes((SUBACK, 3)) + packet_id.to_bytes(2, "big") + b"\x01")  # A's SUBACK
        async with asyncio.timeout(5):
            await entered.wait()
        await transport.sent()
        assert written(SUBSCRIBE) == [(packet_id, ["a"])]  # and no SUBSCRIBE for the empty batch
        assert not session.lost.done()
        a.cancel()
        await unsubscribed(2)
        subscribing.cancel()


async def test_a_topic_left_and_read_again_while_its_subscribe_is_in_flight_is_subscribed_again() -> None:
    """A's SUBSCRIBE of t is in flight; A leaves (t is unsubscribed) and B reads t: the SUBACK
    of A's SUBSCRIBE said B was subscribed, and B said Ready with no subscription at the broker
    (SUBSCRIBE t, UNSUBSCRIBE t, and no SUBSCRIBE after)."""
    session, transport, _ = connected()
    shared = SharedConnection(BrokerAddress(host="127.0.0.1", port=1))
    shared._session = session
    shared.connected.set()

    def written() -> list[tuple[int, int, list[str]]]:
        """(kind, packet id, filters) of every SUBSCRIBE and UNSUBSCRIBE written so far, in order."""
        packets = split_packets(bytearray(transport.written), 2**28)
        return [
            (first, int.from_bytes(body[:2], "big"), filters_of(body, first))
            for first, body in packets
            if first in (SUBSCRIBE, UNSUBSCRIBE)
        ]

    ready = asyncio.Event()

    async def gate(topics: list[str], said: asyncio.Event | None = None) -> None:
        async with shared.link(topics):
            if said is not None:
                said.set()
            await asyncio.Event().wait()

    async with asyncio.TaskGroup() as group:
        subscribing = group.create_task(shared._subscriptions())
        a = group.create_task(gate(["t"]))
        await until(lambda: len(written()) == 1)
        a.cancel()  # A leaves: t is unsubscribed
        await until(lambda: len(written()) == 2)
        (_, first, _), (_, leaving, _) = written()
        session.data_received(bytes((UNSUBACK, 2)) + leaving.to_bytes(2, "big"))
        b = group.create_task(gate(["t"], ready))
        await until(lambda: "t" in shared._unsent)
        session.data_received(bytes((SUBACK, 3)) + first.to_bytes(2, "big") + b"\x01")  # A's SUBSCRIBE's
        await until(lambda: len(written()) == 3)
        assert [(kind, filters) for kind, _, filters in written()] == [
            (SUBSCRIBE, ["t"]),
            (UNSUBSCRIBE, ["t"]),
            (SUBSCRIBE, ["t"]),  # B's own
        ]
        assert not ready.is_set()
        session.data_received(bytes((SUBACK, 3)) + written()[2][1].to_bytes(2, "big") + b"\x01")
        async with asyncio.timeout(5):
            await ready.wait()
        await cancelled(b)
        await cancelled(subscribing)


async def test_a_publish_sent_later_rides_the_next_write_or_goes_alone_after_a_while() -> None:
    """A gate's trace events: no write of their own while other messages are being written."""
    session, transport, _ = connected()
    writes = transport.writes
    session.publish("gatemesh/c/trace/g", b"events", later=True)
    session.publish("gatemesh/c/fwd/g", b"value")
    await asyncio.sleep(0)
    assert len(writes) == 1  # one write: the value, then the events (acknowledged like any publish)
    packets = split_packets(bytearray(writes[0]))
    assert [published(first, body) for first, body in packets] == [
        ("gatemesh/c/fwd/g", b"\0\2", b"value"),
        ("gatemesh/c/trace/g", b"\0\1", b"events"),
    ]
    session.publish("gatemesh/c/trace/g", b"more", later=True)
    await asyncio.sleep(0)
    assert len(writes) == 1  # nothing else to go with: it waits
    await asyncio.sleep(mqtt311.LATER * 2)
    assert len(writes) == 2
    assert writes[1].endswith(b"more")
    assert list(session.unacked) == [1, 2, 3]
    session.close()


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "nothing is listening there (connection refused)"),
        (socket.gaierror(-2, "Name or service not known"), "no such host (Name or service not known)"),
        (TimeoutError(), "TimeoutError"),  # no words of its own: never an empty reason
        (OSError(113, "No route to host"), "No route to host"),
    ],
)
def test_why_a_broker_cannot_be_reached_is_said_in_words(error: OSError, said: str) -> None:
    assert unreachable(error).startswith(said)
