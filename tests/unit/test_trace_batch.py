"""A gate's trace batches: whole vector clock first, deltas after, split when too large, expanded exactly."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import BaseModel, ValidationError

import gates.tracing as tracing
from gates.clocks import Clock, Stamp
from gates.core import GateCore
from gates.protocol import Backward, Feed, Forward, GateSpec, GradReport, topic
from gates.trace_records import TraceBatch, TraceEvent, TraceMsg
from gates.tracing import GateTracer, with_clock
from gates.transport import encode
from orchestrator.compiler import compile_source
from orchestrator.recorder import Recorder, explain_to

CONSUMERS = 40
NODES = ("orchestrator", "x", *(f"mul_{i}" for i in range(CONSUMERS)))
"""The fan-in's nodes by number: what Circuit.nodes would give."""


def batch_from_wire(data: object) -> TraceBatch:
    """A batch as the recorder reads one: from its JSON text (strict: the wire's types only)."""
    return TraceBatch.model_validate_json(json.dumps(data))


def fan_in(tracer_limit: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[BaseModel], list[str]]:
    """Leaf x of CONSUMERS products hears a feed, then one gradient from each product, each
    product's clock knowing more nodes; returns what x sent (stamped) and its trace batches."""
    monkeypatch.setattr(tracing, "TRACE_BATCH_BYTES", tracer_limit)
    spec = GateSpec(id="x", index=1, op="input", consumers=CONSUMERS)
    core = GateCore(spec, "c")
    tracer = GateTracer("x", 1, (), "c", "h1")
    orchestrator = Clock("orchestrator", 0)
    products = [Clock(f"mul_{i}", i + 2) for i in range(CONSUMERS)]
    sent: list[BaseModel] = []
    batches: list[str] = []

    def deliver(name: str, message: BaseModel) -> None:
        payload = encode(message)
        outgoing = [(o.topic, o.message) for o in core.handle(name, payload)]
        run, stamped, events = tracer.step(name, payload, outgoing)
        assert run == "r"
        for _, out in tracer.batch(run, events):
            batches.append(out.model_dump_json())
        sent.extend(message for _, message in stamped)

    deliver(
        topic("c", "feed", "x"), Feed(circuit="c", sender="orchestrator", run="r", value=2.0, clock=orchestrator.send())
    )
    for i, product in enumerate(products):
        for earlier in products[:i]:  # each product has heard of every one before it
            product.receive(earlier.stamp())
        gradient = Backward(circuit="c", sender=product.node, run="r", port=0, grad=float(i), clock=product.send())
        deliver(topic("c", "grad", "x"), gradient)
    return sent, batches


def expanded(batches: list[str]) -> list[TraceEvent]:
    return [event for text in batches for event in TraceBatch.model_validate_json(text).trace_events(NODES)]


def test_a_batch_carries_one_whole_clock_then_deltas(monkeypatch: pytest.MonkeyPatch) -> None:
    sent, batches = fan_in(10_000_000, monkeypatch)
    assert len(batches) == 1
    raw = json.loads(batches[0])["events"]  # [type, t_ns, lamport, clock, whole, msg, fields]
    assert raw[0][4] is True
    assert all(e[4] is False for e in raw[1:])
    assert isinstance(raw[0][3], list)  # by node number
    assert max(len(e[3]) for e in raw[1:]) <= 3  # what a gradient adds: its product, once x's own tick
    # compute, send, then a gradient from mul_0 (node 2)
    assert [e[3] for e in raw[1:4]] == [{"1": 2}, {"1": 3}, {"2": 1, "1": 4}]
    events = expanded(batches)
    assert [e.vc["x"] for e in events] == list(range(1, len(events) + 1))
    # each send's whole vc is exactly the clock its message carried
    sends = {e.msg.id: e for e in events if e.type == "send" and e.msg is not None}
    for message in sent:
        clock = message.clock  # type: ignore[attr-defined]
        assert sends[f"x:{clock.lamport}"].vc == {NODES[i]: count for i, count in enumerate(clock.vc) if count}
    receipts = [e for e in events if e.type == "receive"]
    assert len(receipts) == 1 + CONSUMERS
    assert receipts[-1].vc == {"orchestrator": 1, "x": receipts[-1].vc["x"]} | {
        f"mul_{i}": i + 1 for i in range(CONSUMERS)
    }


def test_a_batch_too_large_is_split_and_reads_back_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    _, whole = fan_in(10_000_000, monkeypatch)
    _, parts = fan_in(2_000, monkeypatch)
    assert len(parts) > 3
    assert all(len(text.encode()) <= 2_000 for text in parts)
    assert all(json.loads(text)["events"][0][4] is True for text in parts)
    assert [e.model_dump(exclude={"t_ns"}) for e in expanded(parts)] == [
        e.model_dump(exclude={"t_ns"}) for e in expanded(whole)
    ]


def test_a_batch_must_start_with_a_whole_clock() -> None:
    base = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "h1"}
    compute = ["compute", 1, 1, {"1": 1}, False, None, {"inputs": [], "value": 2.0}]
    with pytest.raises(ValidationError, match="first event of a batch must have its whole vector clock"):
        batch_from_wire({**base, "events": [compute]})
    with pytest.raises(ValidationError, match=r"event 0: a whole vector clock is a list"):
        batch_from_wire({**base, "events": [[*compute[:4], True, None, compute[6]]]})
    first = [*compute[:3], [0, 1], True, None, None]
    with pytest.raises(ValidationError, match=r"event 1: a whole vector clock is a list"):
        batch_from_wire({**base, "events": [first, [*compute[:4], True, None, None]]})
    with pytest.raises(ValidationError, match=r"events\.0\.6\.bogus"):
        batch_from_wire({**base, "events": [[*compute[:3], [0, 1], True, None, {"bogus": 1}]]})
    with pytest.raises(ValidationError, match=r"events\.0\.3"):  # a count below zero
        batch_from_wire({**base, "events": [[*compute[:3], [0, -1], True, None, None]]})
    with pytest.raises(ValidationError, match=r"events\.0"):
        batch_from_wire({**base, "events": [compute[:5]]})


def test_a_stamped_message_is_the_one_pydantic_would_make() -> None:
    """Stamps and stamped messages skip validation (their values are valid already): they must be
    equal, field for field and byte for byte, to what validation makes; a pydantic upgrade that
    changes a model's insides fails here."""
    clock = Clock("q", 2)
    clock.merge(Clock("x", 1).send())
    stamp = clock.stamp()
    assert stamp == Stamp.model_validate({"lamport": 2, "vc": [0, 1, 1]})
    message = Backward(circuit="c", sender="q", run="r", port=1, grad=-4.0)
    stamped = with_clock(message, stamp)
    assert stamped == message.model_copy(update={"clock": stamp})
    assert encode(stamped) == encode(Backward.model_validate_json(encode(stamped)))
    assert stamped.model_fields_set == {"circuit", "sender", "run", "port", "grad", "clock"}
    assert encode(with_clock(stamped, stamp).model_copy(update={"held": True})).count(b'"held":true') == 1


def test_a_named_message_is_read_off_its_crossing_or_its_fault() -> None:
    """A send or receive names its message by (topic, id): its number comes from the crossing, or
    from a fault's event (a dropped message never crosses); one never seen keeps topic and id."""
    fwd = topic("c", "fwd", "x")
    crossed = {"x:2": TraceMsg(id="x:2", src="x", dest=("f",), phase="forward", topic=fwd, value=3.0)}
    dropped = {"id": "x:3", "src": "x", "phase": "forward", "topic": fwd, "value": 3.0}
    events = [
        ["send", 1, 2, [0, 2], True, [fwd, "x:2"], None],
        ["send", 2, 3, {"1": 3}, False, [fwd, "x:3"], None],
        ["drop", 2, 4, {"1": 4}, False, dropped, None],
        ["send", 3, 5, {"1": 5}, False, [fwd, "x:5"], None],
    ]
    batch = batch_from_wire(
        {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "h1", "events": events}
    )
    seen = dict(crossed)
    seen["x:3"] = TraceMsg.model_validate(dropped)
    first, second, drop, unseen = batch.trace_events(("orchestrator", "x"), seen)
    assert first.msg is crossed["x:2"]
    assert (second.msg, drop.msg) == (seen["x:3"], seen["x:3"])
    assert unseen.msg == TraceMsg(id="x:5", src="x", phase="forward", topic=fwd, note="its crossing was not seen")
    assert [e.vc for e in (first, second, drop, unseen)] == [{"x": n} for n in (2, 3, 4, 5)]


def test_the_recorder_reads_a_dropped_send_off_its_drop() -> None:
    recorder = Recorder()
    recorder.attach(compile_source("x*y"), "c", {})
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    fwd = topic("c", "fwd", "x")
    dropped = {"id": "x:2", "src": "x", "phase": "forward", "topic": fwd, "value": 3.0}
    x = recorder.nodes.index("x")
    whole = [0] * x + [2]
    events = [["send", 1, 2, whole, True, [fwd, "x:2"], None], ["drop", 2, 3, {x: 3}, False, dropped, None]]
    batch = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "h1", "events": events}
    recorder.on_trace(json.dumps(batch).encode())
    send, drop = recorder.events
    assert send.msg is not None
    assert (send.msg.value, send.msg.dest, send.msg.note) == (3.0, ("f",), "")
    assert send.msg == drop.msg
    assert (send.vc, drop.vc) == ({"x": 2}, {"x": 3})


def test_a_send_read_before_its_crossing_gets_the_message_when_it_crosses() -> None:
    """In step mode a gate's batch comes before its message crosses (the message waits to be
    delivered): the send says so until the crossing is read, then carries the message's value."""
    recorder = Recorder()
    recorder.unseen_note = "held in step mode: not delivered (yet, or dropped)"
    recorder.attach(compile_source("x*y"), "c", {})
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    fwd = topic("c", "fwd", "x")
    x = recorder.nodes.index("x")
    whole = [0] * x + [2]
    events = [["send", 1, 2, whole, True, [fwd, "x:2"], None]]
    batch = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "h1", "events": events}
    recorder.on_trace(json.dumps(batch).encode())
    (send,) = recorder.events
    assert send.msg is not None
    assert (send.msg.value, send.msg.dest, send.msg.note) == (
        None,
        ("f",),
        "held in step mode: not delivered (yet, or dropped)",
    )
    crossing = with_clock(Forward(circuit="c", sender="x", run="r", value=3.0), Stamp(lamport=2, vc=whole))
    recorder.on_crossing(fwd, encode(crossing))
    first, cross = recorder.events
    assert first is send
    assert cross.type == "cross"
    assert send.msg == cross.msg
    assert (send.msg.value, send.msg.dest, send.msg.note) == (3.0, ("f",), "")


def test_the_orchestrator_ignores_a_message_whose_clock_names_nodes_it_lacks(caplog: pytest.LogCaptureFixture) -> None:
    """Merged, a forged clock of a million entries would be copied into every later event."""
    recorder = Recorder()
    recorder.attach(compile_source("x*y"), "c", {})  # orchestrator, x, y and the product: nodes 0-3
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    report = topic("c", "report", "x")
    for vc in ([0, 1, 0, 0, 1], [0, 2]):
        message = GradReport(circuit="c", sender="x", run="r", grad=-2.0, clock=Stamp(lamport=3, vc=vc))
        recorder.on_message(report, message, encode(message), crossed=False)
    (receipt,) = recorder.events
    assert (receipt.type, receipt.vc) == ("receive", {"orchestrator": 1, "x": 2})
    assert "a vector clock of 5 entries, for 4 nodes" in caplog.text


def test_explain_tells_a_fault_a_gate_reports_late_as_late() -> None:
    """A gate's events may come well after they happened (a batch held, a slow host): its drop is
    told after what happened since, and the sentence says so (a gate in this process: it shares
    the clock)."""
    recorder = Recorder()
    said: list[str] = []
    explain_to(recorder, said.append)
    recorder.attach(compile_source("x*y"), "c", {})
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    fwd = topic("c", "fwd", "x")
    dropped = {"id": "x:2", "src": "x", "phase": "forward", "topic": fwd, "value": 3.0}
    x = recorder.nodes.index("x")
    two_seconds_ago = time.time_ns() - 2_000_000_000
    events = [["drop", two_seconds_ago, 2, [0] * x + [2], True, dropped, None]]
    batch = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "local", "events": events}
    recorder.on_trace(json.dumps(batch).encode())
    (told,) = said
    assert told.startswith("  1. the fault injector drops x's forward message (x:2) to mul(f): it never reaches")
    assert told.endswith(
        "(told late: it happened 2.0 s ago; a gate tells what its fault injector did after the step's messages "
        "have gone, or when the orchestrator asks where it stands)"
    )


def test_explain_says_which_run_a_sentence_is_of_when_runs_take_turns() -> None:
    """--retries: a retry's sentences start under a line naming it, and a first attempt's fault
    told after the retry began is not left under the retry's line."""
    recorder = Recorder()
    said: list[str] = []
    explain_to(recorder, said.append)
    recorder.attach(compile_source("x*y"), "c", {})
    x = recorder.nodes.index("x")

    def dropped(run: str, lamport: int) -> None:
        fwd = {"id": f"x:{lamport}", "src": "x", "phase": "forward", "topic": topic("c", "fwd", "x"), "value": 3.0}
        events = [["drop", time.time_ns(), lamport, [0] * x + [lamport], True, fwd, None]]
        batch = {"type": "trace", "circuit": "c", "sender": "x", "run": run, "host": "local", "events": events}
        recorder.on_trace(json.dumps(batch).encode())

    recorder.begin("r1", {"x": 3.0, "y": -2.0})
    dropped("r1", 2)
    recorder.begin("r2", {"x": 3.0, "y": -2.0})
    dropped("r2", 2)
    dropped("r1", 3)  # the first attempt's, late
    dropped("r2", 3)
    heads = [line for line in said if not line.lstrip()[0].isdigit()]
    assert heads == [
        "     run 2 (r2): the same inputs again, under a fresh run id",
        "     run 1 (r1), told late:",
        "     run 2 (r2) goes on:",
    ]
    assert [said.index(head) for head in heads] == [1, 3, 5]


def test_the_recorder_ignores_a_batch_whose_clock_names_a_node_it_lacks(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    recorder.attach(compile_source("x*y"), "c", {})  # orchestrator, x, y and the product: nodes 0-3
    recorder.begin("r", {"x": 3.0, "y": -2.0})
    compute = {"inputs": [], "value": 3.0}
    for clocks in ([[0, 1, 0, 0, 7], True], [[0, 1], True, {"4": 1}, False]):
        events = [["compute", 1, 1, *clocks[:2], None, compute]]
        if len(clocks) > 2:
            events.append(["compute", 1, 2, *clocks[2:], None, compute])
        batch = {"type": "trace", "circuit": "c", "sender": "x", "run": "r", "host": "h1", "events": events}
        recorder.on_trace(json.dumps(batch).encode())
    assert recorder.events == []
    assert caplog.text.count("ignored a trace batch of x: a vector clock") == 2
    assert "of 5 entries, for 4 nodes" in caplog.text
    assert "names node 4, of 4 nodes" in caplog.text


def test_a_late_copy_for_a_run_whose_clock_the_gate_let_go_is_not_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clock for it counted the gate's events from 1 again: a second event 1 of x, which
    breaks every vector clock rule (and ShiViz's)."""
    monkeypatch.setattr(tracing, "REMEMBER_RUNS", 2)
    tracer = GateTracer("x", 1, (), "c", "h1")
    name = topic("c", "feed", "x")

    def feed(run: str) -> tuple[str | None, list[int]]:
        """Whose trace the feed's step is in, and its events' Lamport clocks."""
        message = Feed(circuit="c", sender="orchestrator", run=run, value=1.0, clock=Clock("orchestrator", 0).send())
        traced, _, facts = tracer.step(name, encode(message), [])
        return traced, [fact[2] for fact in facts]

    assert [feed(run) for run in ("r1", "r2", "r3")] == [("r1", [2]), ("r2", [2]), ("r3", [2])]  # r1's let go
    assert feed("r1") == (None, [])  # late: not traced from a fresh clock, whose receipt would be x's event 1 again
    assert feed("r3") == ("r3", [3])  # a run still remembered goes on with its clock
