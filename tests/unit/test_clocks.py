"""Logical clocks as the textbook defines them, and messages unchanged when a run is not traced."""

from __future__ import annotations

from gates.clocks import Clock, concurrent, happened_before
from gates.core import GateCore
from gates.protocol import MESSAGE_ADAPTER, Feed, Forward, GateSpec, topic
from gates.trace_records import is_traced
from gates.tracing import Fact, GateTracer
from gates.transport import encode


def test_send_ticks_and_receive_merges_then_ticks() -> None:
    p, q = Clock("p"), Clock("q")
    p.tick()  # a local event at p
    sent = p.send()
    assert (sent.lamport, sent.vc) == (2, {"p": 2})
    for _ in range(5):
        q.tick()
    got = q.receive(sent)
    assert (got.lamport, got.vc) == (6, {"q": 6, "p": 2})  # max(5, 2) + 1; q's own entry ticks after the merge
    back = q.send()
    again = p.receive(back)
    assert (again.lamport, again.vc) == (8, {"p": 3, "q": 7})
    assert happened_before(sent.vc, got.vc)
    assert happened_before(got.vc, again.vc)
    assert not happened_before(got.vc, sent.vc)


def test_independent_events_are_concurrent() -> None:
    p, q = Clock("p"), Clock("q")
    a, b = p.tick(), q.tick()
    assert concurrent(a.vc, b.vc)
    assert a.lamport == b.lamport == 1


def test_untraced_messages_are_byte_for_byte_what_they_were() -> None:
    feed = Feed(circuit="c", sender="orchestrator", run="r1", value=None)
    forward = Forward(circuit="c", sender="q", run="r1", value=3.0)
    assert encode(feed) == b'{"circuit":"c","sender":"orchestrator","type":"feed","run":"r1","value":null}'
    assert encode(forward) == b'{"circuit":"c","sender":"q","type":"forward","run":"r1","value":3.0}'
    assert not is_traced(encode(forward))
    stamped = forward.model_copy(update={"clock": Clock("q").send()})
    assert is_traced(encode(stamped))
    assert MESSAGE_ADAPTER.validate_json(encode(stamped)) == stamped


def noted(fact: Fact) -> dict[str, object]:
    """A fact's type, Lamport clock and other fields, by name."""
    kind, _, lamport, _, _, _, fields = fact
    return {"type": kind, "lamport": lamport, **(fields or {})}


def test_a_gate_stamps_its_messages_only_in_a_traced_run() -> None:
    spec = GateSpec(id="q", op="add", inputs=("x", "y"), consumers=1)
    core = GateCore(spec, "c")
    tracer = GateTracer("q", spec.inputs, "c", "h1")
    orchestrator, x, y = Clock("orchestrator"), Clock("x"), Clock("y")
    x.receive(orchestrator.send())
    y.receive(orchestrator.send())
    outputs = []
    for sender, clock, value in (("x", x, -2.0), ("y", y, 5.0)):
        payload = encode(Forward(circuit="c", sender=sender, run="r", value=value, clock=clock.send()))
        outgoing = [(o.topic, o.message) for o in core.handle(topic("c", "fwd", sender), payload)]
        run, stamped, facts = tracer.step(topic("c", "fwd", sender), payload, outgoing)
        outputs.append((run, stamped, [noted(fact) for fact in facts]))
    (_, nothing, first), (_, sent, second) = outputs
    assert nothing == []
    assert [e["type"] for e in first] == ["receive"]
    assert [e["type"] for e in second] == ["receive", "compute", "send"]
    compute, send = second[1], second[2]
    assert (compute["inputs"], compute["value"]) == ([-2.0, 5.0], 3.0)
    message = sent[0][1]
    assert isinstance(message, Forward)
    assert message.value == 3.0
    assert message.clock is not None
    # q merged both senders' clocks: x's send (x=2) and y's send (y=2), after the two feeds
    assert message.clock.vc == {"orchestrator": 2, "x": 2, "y": 2, "q": 4}
    # x's send is at lamport 3, y's at 4 (each after a feed of lamport 1 or 2); q: receive 4, receive
    # max(4, 4) + 1 = 5, compute 6, send 7
    assert [e["lamport"] for e in first + second] == [4, 5, 6, 7]
    assert send["lamport"] == message.clock.lamport == 7
    assert tracer.batch("r", []) == []  # q's part is not over: its events wait for its backward step
