"""The page's pictures follow every event of its run, not only the crossings.

In step mode a gate's receipt reaches the recorder in the gate's batch, after the crossing of
the message it received: the circuit may be drawn in between, and the value appears only when
it is drawn again. Here the crossing is drawn first, then the batch arrives, as on gate hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET

from gates.core import GateCore
from gates.held import hold, real_topic
from gates.protocol import Feed, topic
from gates.tracing import GateTracer
from gates.transport import BrokerAddress, encode
from orchestrator.compiler import compile_source
from orchestrator.recorder import Recorder
from web import render
from web.session import Session
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
                svg = session.view.pictures[0]
                if svg and (shown := values_drawn(svg)) == expected:
                    break
                await page.wake.wait()
    session.clients.discard(page)
    return shown


async def test_a_receipt_that_arrives_after_the_drawing_is_drawn_too() -> None:
    circuit = compile_source("(x+y)*z", name="c")
    session = Session(BrokerAddress(host="127.0.0.1", port=1))  # only its drawing is used: no connection
    recorder = Recorder(taps=False)
    recorder.attach(circuit, "c", {g.id: "h1" for g in circuit.gates})
    recorder.listeners.append(session._on_event)
    recorder.begin("r", {"x": -2.0, "y": 5.0, "z": -4.0})
    session.view = RunView(
        status="stepping", run="r", circuit=circuit, recorder=recorder, progress=render.Progress.of(circuit)
    )
    y, add = circuit.spec(circuit.by_id["y"]), circuit.spec(circuit.by_id["add_1"])
    y_core, y_tracer = GateCore(y, "c"), GateTracer("y", y.index, y.inputs, "c", "h1")
    add_core, add_tracer = GateCore(add, "c"), GateTracer("add_1", add.index, add.inputs, "c", "h1")

    async with asyncio.TaskGroup() as group:
        drawing = group.create_task(session._draw_loop())
        feed_topic = topic("c", "feed", "y")
        feed_y = Feed(circuit="c", sender="orchestrator", run="r", value=5.0, held=True)
        [(_, feed)] = recorder.stamp("r", [(feed_topic, feed_y)])  # step mode: the stepper delivered it
        recorder.on_crossing(feed_topic, encode(feed))
        payload = encode(feed)
        _, sent, facts = y_tracer.step(
            feed_topic, payload, [(o.topic, o.message) for o in y_core.handle(feed_topic, payload)]
        )
        [(held_topic, forward)] = hold(sent)  # as a gate's HeldLink sends it
        fwd_topic = real_topic(held_topic)
        assert fwd_topic is not None
        for _, batch in y_tracer.batch("r", facts):
            recorder.on_trace(batch.model_dump_json().encode())
        recorder.on_crossing(fwd_topic, encode(forward))  # the stepper delivers y's value to add_1
        assert await drawn(session, set()) == set()  # drawn: the value is on its way, not received

        payload = encode(forward)
        _, sent, facts = add_tracer.step(
            fwd_topic, payload, [(o.topic, o.message) for o in add_core.handle(fwd_topic, payload)]
        )
        assert sent == []  # add_1 waits for x
        for _, batch in add_tracer.batch("r", facts):
            recorder.on_trace(batch.model_dump_json().encode())  # the receipt, after the drawing
        assert await drawn(session, {"5.00"}) == {"5.00"}
        drawing.cancel()
