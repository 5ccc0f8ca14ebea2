"""The binary frame that carries an array between tensor gates.

A JSON list of floats costs ~20 bytes per number and a parse; the frame costs 8. Layout:

    b"GMF1"                       4 bytes, the magic (a JSON message starts with '{')
    header length                 4 bytes, unsigned little-endian
    header                        UTF-8 JSON, validated by FrameHeader (extra fields refused)
    data                          prod(shape) * 8 bytes: float64, little-endian, C order

The header says everything the receiver needs to route and check the data; the data is
checked against it (its length against the shape, every number finite) before any gate sees
it. Scalar circuits keep their JSON messages (gates/protocol.py): only tensor gates speak frames.

Size: a frame holds at most MAX_ELEMENTS numbers (1 MiB of data; the 2-16-16-1 MLP's largest
array over 100 points is 1,600 numbers). The broker must let such a packet through:
broker/mosquitto.conf sets `max_packet_size 2000000` (Mosquitto 2's deprecated
`message_size_limit` caps the payload alone, 0 = MQTT's own limit of 268,435,455 bytes), and
a largest frame plus its topic and MQTT header stays under it.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gates.protocol import Finite, Name, Port, RunId
from gates.tensor_ops import Array

MAGIC = b"GMF1"
PREFIX = len(MAGIC) + 4
MAX_HEADER_BYTES = 4096
MAX_ELEMENTS = 1 << 17
"""Numbers per frame: 1 MiB of float64."""
MAX_DIMS = 8
MAX_FRAME_BYTES = PREFIX + MAX_HEADER_BYTES + 8 * MAX_ELEMENTS
"""The largest valid frame: 1,052,680 bytes, under the 2,000,000-byte `max_packet_size` of
broker/mosquitto.conf (a PUBLISH adds its topic and at most 9 bytes of MQTT header)."""
DTYPE: Literal["<f8"] = "<f8"

FrameKind = Literal["feed", "forward", "backward", "value", "set"]
"""feed: the trainer's data (or a parameter's step trigger, with no data) for one step;
forward: a gate's output; backward: one gradient contribution; value: a parameter's tensor
(after a step, or when asked); set: the trainer gives a parameter its tensor (initial values,
a checkpoint)."""


class FrameError(ValueError):
    """A payload that is not a valid frame; the message says which part is wrong."""


class FrameHeader(BaseModel):
    """What travels in front of the numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    kind: FrameKind
    circuit: Name
    sender: Name
    run: RunId
    step: Annotated[int, Field(ge=0, le=2**53)]
    """The training step (a parameter applies each step's update once, keyed by it)."""
    port: Port | None = None
    """For a backward frame: which input of the sender this gradient is for."""
    lr: Finite | None = None
    """For a parameter's feed: this step's learning rate."""
    dtype: Literal["<f8"] = DTYPE
    shape: Annotated[tuple[Annotated[int, Field(ge=0, le=MAX_ELEMENTS)], ...], Field(max_length=MAX_DIMS)] | None = None
    """The array's shape (() for a scalar), or null for a frame that carries no array."""


class Frame:
    """A header and its array (None when the header's shape is null)."""

    __slots__ = ("array", "header")

    def __init__(self, header: FrameHeader, array: Array | None) -> None:
        self.header = header
        self.array = array

    def __repr__(self) -> str:
        return f"Frame({self.header!r}, shape={None if self.array is None else self.array.shape})"


def is_frame(payload: bytes) -> bool:
    return payload[:4] == MAGIC


def encode(header: FrameHeader, array: Array | None = None) -> bytes:
    """The frame's bytes; the array must match the header's shape and be finite."""
    if (array is None) != (header.shape is None):
        raise FrameError("a frame carries an array exactly when its header has a shape")
    data = b""
    if array is not None:
        assert header.shape is not None
        if tuple(array.shape) != header.shape:
            raise FrameError(f"array of shape {array.shape} under a header that says {header.shape}")
        if array.size > MAX_ELEMENTS:
            raise FrameError(f"{array.size} numbers: a frame carries at most {MAX_ELEMENTS}")
        if not np.isfinite(array).all():
            raise FrameError("the array has a non-finite number (nan or inf)")
        data = np.ascontiguousarray(array, dtype=DTYPE).tobytes()
    text = header.model_dump_json(exclude_none=True).encode()
    return b"".join((MAGIC, len(text).to_bytes(4, "little"), text, data))


def decode(payload: bytes) -> Frame:
    """Parse and check a frame; FrameError names what is wrong."""
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(payload)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    if len(payload) < PREFIX or not is_frame(payload):
        raise FrameError("not a frame: it must start with b'GMF1' and a 4-byte header length")
    size = int.from_bytes(payload[4:PREFIX], "little")
    if size > MAX_HEADER_BYTES or PREFIX + size > len(payload):
        raise FrameError(f"header length {size} is over {MAX_HEADER_BYTES} bytes or past the end of the frame")
    try:
        header = FrameHeader.model_validate_json(payload[PREFIX : PREFIX + size])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'header'}: {e['msg']}" for e in exc.errors()[:3])
        raise FrameError(f"bad frame header: {problems}") from None
    data = memoryview(payload)[PREFIX + size :]
    if header.shape is None:
        if len(data):
            raise FrameError(f"{len(data)} data bytes after a header with no shape")
        return Frame(header, None)
    elements = math.prod(header.shape)
    if elements > MAX_ELEMENTS:
        raise FrameError(f"shape {header.shape} holds {elements} numbers; a frame carries at most {MAX_ELEMENTS}")
    if len(data) != 8 * elements:
        raise FrameError(f"shape {header.shape} needs {8 * elements} data bytes, the frame has {len(data)}")
    # a copy: aligned and writable, so numpy (and BLAS) treat it exactly like an array made here
    array = np.frombuffer(data, dtype=DTYPE).astype(np.float64).reshape(header.shape)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise FrameError(f"number {bad} of the array is not finite ({array.reshape(-1)[bad]})")
    return Frame(header, array)
