"""The MQTT 3.1.1 encoding of gates/mqtt311.py, against the byte layouts the specification gives."""

from __future__ import annotations

import pytest
from aiomqtt import MqttError

from gates.mqtt311 import connect_packet, publish_packet, remaining_length, split_packets, subscribe_packet

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
    with pytest.raises(MqttError, match="remaining length"):
        split_packets(bytearray(bytes.fromhex("30ffffffff7f")))
