"""MQTT 3.1.1's packets as bytes: what gates/mqtt311.Session writes, and the framing and the
checks of what it reads (a broker's bytes are trusted no further than `malformed` allows).

Pure functions, no I/O: tests/unit/test_mqtt311.py checks them against the specification's
byte layouts.
"""

from __future__ import annotations

from gates.errors import ProtocolViolation

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

MAX_PACKET = 2_000_000
"""The largest packet accepted from the broker, by its declared remaining length.

The broker's own limit: broker/mosquitto.conf sets Mosquitto's `max_packet_size 2000000`, and a
broker forwards a PUBLISH no larger than it accepted, so nothing legitimate is larger (gate
messages are under a kilobyte; the largest, a status naming 1,024 missing inputs, ~130 KB).
Mosquitto's own default is no limit but MQTT's 268,435,455 bytes: one corrupt length header
would then make the session buffer 256 MB before noticing. `Session.open(max_packet=...)`
raises it for a broker configured with a larger limit.
"""
ACKNOWLEDGEMENTS = {CONNACK: ("CONNACK", 2, 2), PUBACK: ("PUBACK", 2, 2), SUBACK: ("SUBACK", 3, None)}
ACKNOWLEDGEMENTS |= {UNSUBACK: ("UNSUBACK", 2, 2), PINGRESP: ("PINGRESP", 0, 0)}
"""packet type -> (name, least, most body bytes) of every packet but PUBLISH a broker may send a client."""


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


def subscribe_packet(packet_id: int, filters: list[str], qos: int = 1) -> bytes:
    return packet(SUBSCRIBE, packet_id.to_bytes(2, "big"), *(utf8(name) + bytes((qos,)) for name in filters))


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    return packet(UNSUBSCRIBE, packet_id.to_bytes(2, "big"), *(utf8(name) for name in filters))


def split_packets(buffer: bytearray, max_packet: int = MAX_PACKET) -> list[tuple[int, bytes]]:
    """Remove every complete packet from the front of `buffer`: (first byte, body) each.

    ProtocolViolation for a malformed length, or one over `max_packet`: said as soon as the
    length is read, before any of the body is waited for.
    """
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
                msg = "malformed packet: remaining length longer than 4 bytes"
                raise ProtocolViolation(msg)
        else:
            break  # the length itself is incomplete
        if size > max_packet:
            kind = f"0x{buffer[position]:02x}"
            msg = f"a packet ({kind}) declares {size:,} bytes, over the {max_packet:,}-byte limit"
            raise ProtocolViolation(msg)
        if index + size > end:
            break
        found.append((buffer[position], bytes(buffer[index : index + size])))
        position = index + size
    del buffer[:position]
    return found


def published(first: int, body: bytes) -> tuple[str, bytes, bytes]:
    """(topic, packet id (b"" at QoS 0), payload) of a PUBLISH that `malformed` passed;
    UnicodeDecodeError if its topic is not UTF-8."""
    start = 2 + int.from_bytes(body[:2], "big")
    name = body[2:start].decode()
    if first & 0x02:  # QoS 1
        return name, body[start : start + 2], body[start + 2 :]
    return name, b"", body[start:]


def malformed(first: int, body: bytes) -> str | None:
    """What breaks MQTT 3.1.1 in a packet from the broker, or None if it is well formed.

    The checks a client must make before trusting a packet's fields: a PUBLISH at QoS 0 or 1
    only (this session subscribes at most at QoS 1, and 3 is no QoS), with its whole topic and
    a non-zero packet id; an acknowledgement of exactly its size (a short one would otherwise be
    read as packet id 0, or as the id of a publish it does not acknowledge), with its reserved
    flags zero (MQTT-2.2.2-2).
    """
    kind = first & 0xF0
    if kind == PUBLISH:
        qos = (first >> 1) & 0x03
        if qos > 1:
            return f"a PUBLISH at QoS {qos}" + (" (there is no QoS 3)" if qos == 3 else ", above any granted")
        end = 2 + (int.from_bytes(body[:2], "big") if len(body) >= 2 else 0)
        if len(body) < end + 2 * qos:
            return f"a PUBLISH of {len(body)} bytes, too short for its topic" + (" and packet id" if qos else "")
        if qos and body[end : end + 2] == b"\0\0":
            return "a QoS 1 PUBLISH with packet id 0"
        return None
    expected = ACKNOWLEDGEMENTS.get(kind)
    if expected is None:
        return f"an unexpected packet type 0x{first:02x}"
    name, least, most = expected
    if first & 0x0F:
        return f"a {name} with reserved flags 0x{first & 0x0F:x}"
    if len(body) < least or (most is not None and len(body) > most):
        size = f"{least}" if least == most else f"at least {least}"
        return f"a {name} of {len(body)} bytes (it has {size})"
    if kind in (PUBACK, SUBACK, UNSUBACK) and body[:2] == b"\0\0":
        return f"a {name} for packet id 0"
    return None
