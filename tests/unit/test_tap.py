"""The recorder's tap: raw bytes framed back into messages, however the reads cut them; and a
trace is complete only once every message crossed or received has its send."""

from __future__ import annotations

import json

import pytest

from gates.clocks import Clock
from gates.mqtt_codec import PINGRESP, publish_packet
from gates.protocol import Forward, topic
from gates.trace_records import TraceEvent
from gates.tracing import with_clock
from gates.transport import encode
from orchestrator.compiler import compile_source
from orchestrator.recorder import Recorder
from orchestrator.tap import NEW_STREAM, TapStream
from orchestrator.trace import causal_order

MESSAGES = [(f"gatemesh/c/fwd/g{i}", f'{{"value": {i}}}'.encode() * (1 + 97 * i)) for i in range(6)]
"""Payloads from 13 bytes to ~6 KB: some packets have a 2-byte length, some a 3-byte one."""


def stream_bytes() -> bytes:
    packets = [publish_packet(name, payload, None) for name, payload in MESSAGES]
    packets.insert(2, bytes((PINGRESP, 0)))  # the broker answers the tap's pings in the same stream
    return b"".join(packets)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 100, 4096, 10**6])
def test_every_message_is_framed_again_whatever_the_reads(cut: int) -> None:
    data = stream_bytes()
    stream = TapStream()
    found: list[tuple[int, str, bytes]] = []
    for t_ns, start in enumerate(range(0, len(data), cut), 1):
        found += stream.read((t_ns, data[start : start + cut]))
    assert [(name, payload) for _, name, payload in found] == MESSAGES
    # a message's time is the read that completed it
    ends = [len(b"".join(publish_packet(n, p, None) for n, p in MESSAGES[: i + 1])) for i in range(len(MESSAGES))]
    ends = [end + (2 if i >= 2 else 0) for i, end in enumerate(ends)]  # the PINGRESP before message 2
    assert [t_ns for t_ns, _, _ in found] == [(end - 1) // cut + 1 for end in ends]


def test_a_new_connection_drops_the_half_packet_the_old_one_left() -> None:
    data = stream_bytes()
    stream = TapStream()
    assert list(stream.read((1, data[:5]))) == []  # the first message, cut short by a lost connection
    assert list(stream.read(NEW_STREAM)) == []
    assert [(name, payload) for _, name, payload in stream.read((2, data))] == MESSAGES


def test_a_crossing_without_its_send_keeps_the_trace_incomplete() -> None:
    """A gate sends its batch after the step's messages, so the orchestrator can hear a message
    cross before it has the send that made it: the trace is missing that send until it comes."""
    circuit = compile_source("x*y")
    recorder = Recorder()
    recorder.attach(circuit, "c", {})
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    x = circuit.numbers["x"]
    clock = Clock("x", x)
    clock.advance()  # x heard its feed
    forward = with_clock(Forward(circuit="c", sender="x", run="r", value=3.0), clock.send())
    name = topic("c", "fwd", "x")
    payload = encode(forward)
    recorder.on_tapped((1, publish_packet(name, payload, None)))
    assert [e.type for e in recorder.events] == ["cross"]
    assert recorder.missing() == 1  # x's send
    event = ["send", 5, 2, clock.vc, True, [name, "x:2"], None]
    batch = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "local", "events": [event]}
    recorder.on_trace(json.dumps(batch).encode())
    assert [e.type for e in recorder.events] == ["cross", "send"]
    send = recorder.events[1].msg
    assert send is not None
    assert (send.value, send.phase, send.dest) == (3.0, "forward", ("f",))  # read off its crossing
    assert recorder.missing() == 1  # the send is in; now it promises a receipt at the product, not there yet


def test_a_receipt_heard_before_its_crossing_is_ordered_after_it() -> None:
    """The orchestrator reads a report on its own connection, the tap hears the same message
    cross a moment later: the trace still shows the crossing first."""
    msg = {"id": "x:3", "src": "x", "dest": ["orchestrator"], "phase": "report", "topic": "gatemesh/c/report/x"}
    at = {"run": "r", "msg": msg, "lamport": 3}
    send = TraceEvent.model_validate({**at, "t_ns": 10, "type": "send", "node": "x", "host": "h", "vc": {"x": 3}})
    vc = {"x": 3, "orchestrator": 5}
    receive = TraceEvent.model_validate(
        {**at, "t_ns": 20, "type": "receive", "node": "orchestrator", "host": "h", "vc": vc}
    )
    cross = TraceEvent.model_validate(
        {**at, "t_ns": 30, "type": "cross", "node": "broker", "host": "broker", "vc": {"x": 3}}
    )
    ordered = causal_order([receive, send, cross])
    assert [(e.type, e.seq) for e in ordered] == [("send", 1), ("cross", 2), ("receive", 3)]


def test_a_duplicates_second_receipt_is_ordered_after_its_second_crossing() -> None:
    """With dup=1 the orchestrator read a report's second copy 0.1 ms before its tap heard it
    cross: only the first crossing bound the receipts, and the trace had the copy received first."""
    msg = {"id": "f:11", "src": "f", "dest": ["orchestrator"], "phase": "report", "topic": "gatemesh/c/report/f"}
    at = {"run": "r", "msg": msg, "lamport": 11}

    def event(kind: str, t_ns: int, node: str, vc: dict[str, int], note: str = "") -> TraceEvent:
        host = "broker" if node == "broker" else "h"
        fields = {**at, "t_ns": t_ns, "type": kind, "node": node, "host": host, "vc": vc, "note": note}
        return TraceEvent.model_validate(fields)

    send = event("send", 10, "f", {"f": 5})
    first, second = event("cross", 20, "broker", {"f": 5}), event("cross", 50, "broker", {"f": 5})
    got = event("receive", 15, "orchestrator", {"f": 5, "orchestrator": 4})
    again = event("receive", 40, "orchestrator", {"f": 5, "orchestrator": 6}, "duplicate")
    ordered = causal_order([again, second, got, first, send])
    assert [(e.type, e.t_ns) for e in ordered] == [
        ("send", 10),
        ("cross", 20),
        ("receive", 15),
        ("cross", 50),
        ("receive", 40),
    ]
