"""The binary array frame: round trips, byte layout, and every way a payload can be refused."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from gates import frame
from gates.frame import MAX_ELEMENTS, MAX_FRAME_BYTES, FrameError, FrameHeader, decode, encode
from gates.tensor_protocol import ANY_ASSIGNMENT, TensorAssignment

HEADER = FrameHeader(kind="forward", circuit="moons.1a2b3c4d", sender="h1", run="s7", step=7, shape=(2, 3))
DOC = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()


def raw(header: dict[str, object], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return b"GMF1" + len(text).to_bytes(4, "little") + text + data


def test_round_trip_keeps_every_bit() -> None:
    array = np.array([[0.1, -2.5, 1e-300], [3.0, -0.0, 7.25]])
    decoded = decode(encode(HEADER, array))
    assert decoded.header == HEADER
    assert decoded.array is not None
    assert decoded.array.tobytes() == array.tobytes()


def test_layout_is_magic_length_header_then_little_endian_float64() -> None:
    payload = encode(HEADER.model_copy(update={"shape": (2,)}), np.array([1.0, -2.0]))
    size = int.from_bytes(payload[4:8], "little")
    assert payload[:4] == b"GMF1"
    assert json.loads(payload[8 : 8 + size])["shape"] == [2]
    assert payload[8 + size :] == struct.pack("<2d", 1.0, -2.0)


def test_a_scalar_and_an_arrayless_frame() -> None:
    scalar = decode(encode(HEADER.model_copy(update={"shape": ()}), np.asarray(0.5)))
    assert scalar.array is not None
    assert scalar.array.shape == ()
    assert float(scalar.array) == 0.5
    trigger = decode(
        encode(FrameHeader(kind="feed", circuit="c", sender="trainer", run="s0", step=0, lr=1.0, shape=None))
    )
    assert trigger.array is None
    assert trigger.header.lr == 1.0


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"type": "forward"}', "not a frame"),
        (b"GMF1\x00", "not a frame"),
        (b"GMF1" + (10**6).to_bytes(4, "little") + b"{}", "header length 1000000"),
        (b"GMF1" + (5).to_bytes(4, "little") + b"{not", "past the end"),
        (raw({"kind": "forward"}, b""), "circuit: Field required"),
        (raw({**HEADER.model_dump(), "extra": 1}, b"\0" * 48), "extra: Extra inputs are not permitted"),
        (raw({**HEADER.model_dump(), "dtype": "<f4"}, b"\0" * 48), "dtype"),
        (raw({**HEADER.model_dump(), "lr": float("nan")}, b"\0" * 48), "header"),  # NaN is not JSON
        (raw(HEADER.model_dump(), b"\0" * 40), r"shape \(2, 3\) needs 48 data bytes, the frame has 40"),
        (raw({**HEADER.model_dump(), "shape": None}, b"\0" * 8), "8 data bytes after a header with no shape"),
        (raw({**HEADER.model_dump(), "shape": [1024, 1024]}, b""), f"at most {MAX_ELEMENTS}"),
        (raw({**HEADER.model_dump(), "shape": [2]}, struct.pack("<2d", 1.0, float("inf"))), "number 1 .* not finite"),
        (raw({**HEADER.model_dump(), "shape": [1]}, struct.pack("<d", float("nan"))), "number 0 .* not finite"),
    ],
)
def test_bad_payloads_are_refused_with_the_reason(payload: bytes, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        decode(payload)


def test_size_cap() -> None:
    with pytest.raises(FrameError, match="over the"):
        decode(b"GMF1" + b"\0" * MAX_FRAME_BYTES)
    big = np.zeros(MAX_ELEMENTS)
    assert len(encode(HEADER.model_copy(update={"shape": big.shape}), big)) <= MAX_FRAME_BYTES
    too_big = np.zeros(MAX_ELEMENTS + 1)
    with pytest.raises(FrameError, match="at most"):
        encode(HEADER.model_copy(update={"shape": too_big.shape}), too_big)
    assert MAX_FRAME_BYTES + 1000 < 2_000_000  # the project's Mosquitto max_packet_size


def test_broker_config_lets_the_largest_frame_through() -> None:
    conf = (Path(__file__).parents[2] / "broker" / "mosquitto.conf").read_text()
    limit = int(re.search(r"^max_packet_size (\d+)$", conf, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert limit > frame.MAX_FRAME_BYTES + 1000


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(FrameError, match="non-finite"):
        encode(HEADER.model_copy(update={"shape": (1,)}), np.array([np.nan]))
    with pytest.raises(FrameError, match=r"shape \(3,\) under a header that says \(2, 3\)"):
        encode(HEADER, np.zeros(3))


def test_the_documented_frame_decodes() -> None:
    """docs/PROTOCOL.md shows a frame as hex; it must decode to the header and numbers shown."""
    section = DOC.split("## Tensor frames", 1)[1].split("\n## ", 1)[0]
    hexdump = re.search(r"```text frame-bytes\n(.*?)\n```", section, flags=re.DOTALL)
    assert hexdump is not None
    payload = bytes.fromhex("".join(line.split("|")[0] for line in hexdump.group(1).splitlines()))
    decoded = decode(payload)
    shown = re.search(r"```json frame-header\n(.*?)\n```", section, flags=re.DOTALL)
    assert shown is not None
    assert decoded.header == FrameHeader.model_validate_json(shown.group(1))
    assert decoded.array is not None
    assert decoded.array.tolist() == [[0.5, -1.0, 2.0]]


def test_the_documented_tensor_assignment_validates() -> None:
    shown = re.search(r"```json tensor-assign\n(.*?)\n```", DOC, flags=re.DOTALL)
    assert shown is not None
    assignment = ANY_ASSIGNMENT.validate_json(shown.group(1))
    assert isinstance(assignment, TensorAssignment)
    assert assignment.spec.needs_grad == (True, False)
