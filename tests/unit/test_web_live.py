"""What the page shows follows the run as its events arrive, in whatever order they arrive.

In step mode a gate's receipt reaches the recorder in the gate's batch, after the crossing of
the message it received: the circuit may be drawn in between, and a gate may take its time.
Here the real recorder and gate code make those events (`y` hears its feed and sends its value,
the stepper delivers it, `add_1` receives it and waits for `x`), in the order gate hosts make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from pydantic import BaseModel

import web.session
from gates.core import GateCore
from gates.held import hold, real_topic
from gates.protocol import Feed, topic
from gates.trace_records import STEP_MODE_COPY_DROP, STEP_MODE_DROP, STEP_MODE_DUPLICATE, TraceEvent, TraceMsg
from gates.tracing import GateTracer
from gates.transport import BrokerAddress, encode
from orchestrator.compiler import compile_source
from orchestrator.recorder import Recorder
from viz.circuit import draw_circuit, state_at
from viz.lamport import draw_lamport
from web import render
from web.session import Session
from web.stepper import Held
from web.view import RunView

SVG = "{http://www.w3.org/2000/svg}"


def values_drawn(svg: str) -> set[str]:
    """The circuit's value labels (green, above the wires): their own text, not their titles'."""
    labels = (t for t in ET.fromstring(svg).iter(f"{SVG}text") if "value" in t.get("class", "").split())
    own = ("".join([t.text or "", *(child.tail or "" for child in t)]).strip() for t in labels)
    return {text for text in own if text}


async def drawn(session: Session, expected: set[str], timeout: float = 5.0) -> set[str]:
    """The values drawn, once the circuit is drawn with `expected` (the last drawing's, on timeout)."""
    page = session.connect()  # woken whenever the session has something new to show
    shown: set[str] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                page.wake.clear()
                svg = session.pictures[0]
                if svg and (shown := values_drawn(svg)) == expected:
                    break
                await page.wake.wait()
    session.clients.discard(page)
    return shown


class SteppedRun:
    """A stepped run of (x+y)*z on host h1, shown by a Session (only its drawing and its checks
    are used: it never connects), its events made by the real recorder and gates."""

    def __init__(self) -> None:
        self.circuit = circuit = compile_source("(x+y)*z", name="c")
        self.session = Session(BrokerAddress(host="127.0.0.1", port=1))
        self.recorder = recorder = Recorder(taps=False)
        recorder.attach(circuit, "c", {g.id: "h1" for g in circuit.gates})
        recorder.listeners.append(self.session._on_event)
        recorder.begin("r", {"x": -2.0, "y": 5.0, "z": -4.0})
        self.session.view = RunView(
            status="stepping", run="r", circuit=circuit, recorder=recorder, progress=render.Progress.of(circuit)
        )
        y, add = circuit.spec(circuit.by_id["y"]), circuit.spec(circuit.by_id["add_1"])
        self.y = GateCore(y, "c"), GateTracer("y", y.index, y.inputs, "c", "h1")
        self.add = GateCore(add, "c"), GateTracer("add_1", add.index, add.inputs, "c", "h1")
        self.forward_topic, self.forward, self.held_topic = "", b"", ""

    def y_hears_its_feed(self) -> None:
        """The stepper delivered the feed; y sends its value to the held topic, then its events."""
        feed_topic = topic("c", "feed", "y")
        feed = Feed(circuit="c", sender="orchestrator", run="r", value=5.0, held=True)
        [(_, stamped)] = self.recorder.stamp("r", [(feed_topic, feed)])
        payload = encode(stamped)
        self.recorder.on_crossing(feed_topic, payload)
        core, tracer = self.y
        _, sent, facts = tracer.step(
            feed_topic, payload, [(o.topic, o.message) for o in core.handle(feed_topic, payload)]
        )
        [(held_topic, forward)] = hold(sent)  # as a gate's HeldLink sends it
        self.forward_topic, self.forward = real_topic(held_topic) or "", encode(forward)
        self.held_topic = held_topic
        self._publish(tracer.batch("r", facts))

    def y_value_listed(self) -> Held:
        """y's value sent to its held topic and listed by the stepper (as watching the deployment has it)."""
        stepper = self.session.stepper
        stepper.begin("r")
        stepper._readers = self.circuit.readers
        self.y_hears_its_feed()
        stepper._on_message(self.held_topic, self.forward)
        (first,) = stepper.pending.values()
        return first

    def copy_listed(self, first: Held) -> Held:
        """The second copy a duplicate of `first` lists."""
        copy = replace(first, id="m-copy", key=f"{first.key} #2", copy=True)
        self.session.stepper.pending[copy.id] = copy
        return copy

    def stepper_delivers_y(self) -> None:
        self.recorder.on_crossing(self.forward_topic, self.forward)

    def add_receives_y(self) -> None:
        """add_1 handles y's value (it sends nothing: it waits for x) and publishes its receipt."""
        core, tracer = self.add
        name, payload = self.forward_topic, self.forward
        _, sent, facts = tracer.step(name, payload, [(o.topic, o.message) for o in core.handle(name, payload)])
        assert sent == []
        self._publish(tracer.batch("r", facts))

    def _publish(self, batches: list[tuple[str, BaseModel]]) -> None:
        for _, batch in batches:
            self.recorder.on_trace(batch.model_dump_json().encode())


async def test_a_receipt_that_arrives_after_the_drawing_is_drawn_too() -> None:
    run = SteppedRun()
    async with asyncio.TaskGroup() as group:
        drawing = group.create_task(run.session._draw_loop())
        run.y_hears_its_feed()
        run.stepper_delivers_y()
        assert await drawn(run.session, set()) == set()  # drawn: the value is on its way, not received
        run.add_receives_y()  # the receipt, after the drawing
        assert await drawn(run.session, {"5.00"}) == {"5.00"}
        drawing.cancel()


def test_a_message_delivered_and_not_yet_received_keeps_a_stepped_run_from_being_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web.session, "QUIET", -1.0)  # as if nothing had changed for long
    run = SteppedRun()
    run.y_hears_its_feed()
    run.stepper_delivers_y()  # nothing waits at the stepper now
    assert run.recorder.in_flight("r") == 1
    assert not run.session.stepped_run_is_stuck()  # add_1 may be slow: what it sends is still to come
    run.add_receives_y()
    assert run.recorder.in_flight("r") == 0
    assert run.session.stepped_run_is_stuck()  # add_1 waits for x, and nothing will deliver it


def test_a_gate_on_a_lost_host_is_waited_for_no_more() -> None:
    run = SteppedRun()
    run.y_hears_its_feed()
    run.stepper_delivers_y()
    assert run.recorder.in_flight("r") == 1
    run.recorder.host_lost("h1", "stopped answering", ["r"])
    assert run.recorder.in_flight("r") == 0


def test_the_progress_of_a_counted_run_leaves_out_the_run_it_replaced() -> None:
    """Past 1,000 gates a run is counted, not traced. Restarted mid-pass, the old run's gates
    still send: their messages, arriving before the new run's first, were adopted as the new
    view's run, and every later message of both was counted into its progress."""
    session = Session(BrokerAddress(host="127.0.0.1", port=1))
    session.view.run = "old"
    session._replaced = session.view.run  # what _run does when a new run replaces the view
    session.view = RunView(status="running", progress=render.Progress.of(compile_source("x * y")))
    for run in ("old", "new", "old", "new"):
        session._tally(run, "fwd")
    assert session.view.run == "new"
    assert session.view.progress is not None
    assert session.view.progress.crossed["forward"] == 2


def test_second_copies_are_counted_apart_from_the_pass() -> None:
    """With duplicates a phase read "forward 7/5" and the parts added up to more than the whole."""
    progress = render.Progress.of(compile_source("q = x + y; f = q * z"))
    progress.crossed.update({"feed": 3, "forward": 7, "backward": 6, "report": 5})
    seen = progress.view()
    assert seen["phases"] == [
        {"phase": "feed", "crossed": 3, "expected": 3},
        {"phase": "forward", "crossed": 5, "expected": 5},
        {"phase": "backward", "crossed": 5, "expected": 5},
        {"phase": "report", "crossed": 3, "expected": 3},
    ]
    assert (seen["crossed"], seen["expected"], seen["copies"]) == (16, 16, 5)


def test_a_second_copy_does_not_make_up_for_a_dropped_message() -> None:
    """add_1's gradient to y duplicated and its gradient to x dropped: the page said "backward
    5/5", the copy's crossing counted in place of the lost message; told apart by the crossings'
    message ids it is 4/5 and one second copy."""
    session = Session(BrokerAddress(host="127.0.0.1", port=1))
    session.view = RunView(status="stepping", run="r", progress=render.Progress.of(compile_source("(x+y)*z")))
    for sender, lamport, dest in [("orchestrator", 5, "mul_1"), ("mul_1", 9, "add_1"), ("mul_1", 10, "z")] + [
        ("add_1", 12, "y")
    ] * 2:  # not add_1:11, to x
        msg = TraceMsg(id=f"{sender}:{lamport}", src=sender, dest=(dest,), phase="backward", topic=f"c/grad/{dest}")
        session._on_event(TraceEvent(t_ns=1, type="cross", run="r", node="broker", host="", lamport=0, vc={}, msg=msg))
    assert session.view.progress is not None
    seen = session.view.progress.view()
    assert seen["phases"] == [
        {"phase": "feed", "crossed": 0, "expected": 3},
        {"phase": "forward", "crossed": 0, "expected": 5},
        {"phase": "backward", "crossed": 4, "expected": 5},
        {"phase": "report", "crossed": 0, "expected": 3},
    ]  # backward was 5/5
    assert (seen["crossed"], seen["copies"]) == (4, 1)
    for _ in range(2):  # a probe's answer, duplicated: not the pass's, nor a second copy of one of its messages
        session.view.progress.count("status", "add_1:20")
    assert session.view.progress.view()["copies"] == 1


def test_dropping_a_second_copy_is_said_and_leaves_the_message_delivered() -> None:
    """The first copy of a duplicate was delivered: dropping the second loses nothing. It was
    recorded as a drop of the message itself, and told as "it is never delivered"."""
    run = SteppedRun()
    stepper = run.session.stepper
    first = run.y_value_listed()
    copy = run.copy_listed(first)
    stepper.act("drop", copy.id)
    assert (
        run.session.view.sentences[-1]
        == "you drop the second copy of forward 5.00: y \u2192 add_1 (y:4): the receiver keeps the first"
    )
    (copy_dropped,) = [e for e in run.recorder.trace().events if e.type == "drop"]
    assert copy_dropped.note == STEP_MODE_COPY_DROP  # not the message's drop: the circuit loses nothing
    assert state_at(run.recorder.trace(), "r").lost_values == set()
    stepper.act("drop", first.id)  # the message itself: into the trace, as the drop it is
    (dropped,) = [e for e in run.recorder.trace().events if e.type == "drop" and e.note == STEP_MODE_DROP]
    assert dropped.msg is not None
    assert (dropped.msg.src, dropped.msg.value) == ("y", 5.0)
    # the circuit figure says y's value was lost, where it would be: not blank, as one not yet sent
    figure = ET.fromstring(draw_circuit(run.circuit, state_at(run.recorder.trace(), "r")))
    lost = [e for e in figure.iter() if "value-lost" in e.get("class", "").split()]
    title = "{http://www.w3.org/2000/svg}title"
    assert [(e.findtext(title), "".join(e.itertext()).removeprefix(e.findtext(title) or "")) for e in lost] == [
        ("y: its value's message was dropped", "lost")
    ]
    # and the Lamport diagram says whose drop it was: the student's, though the orchestrator records it
    diagram = ET.fromstring(draw_lamport(run.recorder.trace(), "r"))
    marks = [e for e in diagram.iter() if e.get("class") == "fault drop"]
    words = ["".join(t.itertext()) for mark in marks for t in mark if t.get("class") == "fault"]
    assert words == ["you drop copy 2", "you drop"]
    (arrow,) = [e for e in diagram.iter() if e.get("class") == "arrow dropped"]
    assert (arrow.findtext(title) or "").endswith("; dropped by you, in step mode")


def waiting_copies(run: SteppedRun) -> list[str]:
    """The hover texts of the second copies the Lamport diagram draws waiting."""
    diagram = ET.fromstring(draw_lamport(run.recorder.trace(), "r"))
    title = f"{SVG}title"
    return [
        group.findtext(title) or ""
        for group in diagram.iter(f"{SVG}g")
        for line in group.iter(f"{SVG}line")
        if line.get("class") == "msg forward undelivered duplicate"
    ]


@pytest.mark.parametrize("then", ["deliver", "drop"])
def test_a_second_copy_a_student_duplicates_waits_in_the_lamport_diagram_until_it_goes(then: str) -> None:
    """The stepper delivered one copy of y's value and listed a second: the page's list showed
    it, the Lamport diagram did not (the trace had no event for a student's duplicate)."""
    run = SteppedRun()
    stepper = run.session.stepper
    first = run.y_value_listed()
    run.session._duplicated(first)  # what the stepper says once the broker has the first copy
    run.stepper_delivers_y()
    run.add_receives_y()
    assert run.session.view.sentences[-1] == (
        "you duplicate forward 5.00: y \u2192 add_1 (y:4): one copy is delivered now, a second waits in the list"
    )
    (duplicated,) = [e for e in run.recorder.trace().events if e.type == "duplicate"]
    assert (duplicated.node, duplicated.note, duplicated.msg and duplicated.msg.id) == (
        "orchestrator",
        STEP_MODE_DUPLICATE,
        "y:4",
    )
    assert [hover.rsplit("\n", 1)[-1] for hover in waiting_copies(run)] == [
        "sent by y at lamport 4; a duplicate's second copy is not delivered yet to add_1: the run goes on "
        "(in step mode it waits for you)"
    ]
    assert run.recorder.missing() == 2  # the second copy owes its crossing and its receipt
    run.recorder.end("other-run")
    assert run.recorder.missing() == 2  # while this run goes on
    if then == "deliver":
        run.stepper_delivers_y()
        run.add_receives_y()
        receipts = [e.note for e in run.recorder.trace().events if e.type == "receive" and e.node == "add_1"]
        assert receipts == ["", "duplicate"]
    else:
        stepper.act("drop", run.copy_listed(first).id)
    assert waiting_copies(run) == []
    assert run.recorder.missing() == 0


def test_a_second_copy_still_waiting_when_its_run_ends_is_owed_no_more() -> None:
    """The stepper lets go of what waits once a run is over: the trace waited for the copy's
    crossing and receipt (the page's drain, 0.5 s after every such run) and called them missing."""
    run = SteppedRun()
    first = run.y_value_listed()
    run.session._duplicated(first)
    run.stepper_delivers_y()
    run.add_receives_y()
    assert run.recorder.missing() == 2
    run.recorder.end("r")
    assert run.recorder.missing() == 0


def test_a_second_copy_dropped_before_its_duplicate_is_told_is_not_drawn_waiting() -> None:
    """A replay (time travel) duplicates and drops the copy in one go: the drop is recorded at
    once, the duplicate on its PUBACK, after it. The diagram drew the dropped copy as owed."""
    run = SteppedRun()
    first = run.y_value_listed()
    run.session.stepper.act("drop", run.copy_listed(first).id)
    run.session._duplicated(first)
    run.stepper_delivers_y()
    run.add_receives_y()
    assert [e.type for e in run.recorder.trace().events if e.node == "orchestrator"][-2:] == ["drop", "duplicate"]
    assert waiting_copies(run) == []


def test_a_pass_from_the_page_waits_longer_for_a_bigger_circuit_but_not_forever() -> None:
    assert web.session.run_timeout(3) == 10.15
    assert web.session.run_timeout(1200) == 70.0
    assert web.session.run_timeout(65_000) == 600.0  # as long as a timeout given may be (web/commands.py)


def test_a_feed_a_student_drops_leaves_its_leafs_value_lost_on_the_circuit() -> None:
    """A dropped feed: the leaf never has a value to send, and its wire said "not yet"."""
    run = SteppedRun()
    feed_topic = topic("c", "feed", "x")
    feed = Feed(circuit="c", sender="orchestrator", run="r", value=-2.0)
    [(_, stamped)] = run.recorder.stamp("r", [(feed_topic, feed)])
    assert isinstance(stamped, Feed)
    run.recorder.dropped("r", feed_topic, stamped)
    state = state_at(run.recorder.trace(), "r")
    assert (state.lost_values, state.values) == ({"x"}, {})
