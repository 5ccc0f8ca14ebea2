"""A Lamport diagram's arrows pass clear of the events they are not about: one drawn through a
node's dot reads as if that node sent or received the message."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from gates.protocol import Feed, topic
from orchestrator.compiler import compile_source
from orchestrator.recorder import Recorder
from orchestrator.trace import read_trace
from viz.lamport import draw_lamport
from viz.wire_labels import NEAR, crossings, overlaps

SVG = "{http://www.w3.org/2000/svg}"
FAULTY = Path(__file__).parents[2] / "docs" / "img" / "faulty.jsonl"
CLEAR = 6.0
"""Pixels between an arrow and a mark's centre where it crosses the mark's line: a dot has radius
3, a line is 1.4 wide."""


def marks(svg: ET.Element) -> list[tuple[float, float]]:
    """The centre of every event's mark: dots, compute squares, fault diamonds."""
    found = [(float(c.get("cx", "0")), float(c.get("cy", "0"))) for c in svg.iter(f"{SVG}circle")]
    for rect in svg.iter(f"{SVG}rect"):
        if "compute" in rect.get("class", ""):
            found.append((float(rect.get("x", "0")) + 3, float(rect.get("y", "0")) + 3))
    for path in svg.iter(f"{SVG}path"):
        if path.get("class") == "cross" and (start := re.match(r"M([\d.]+),([\d.]+)", path.get("d", ""))):
            found.append((float(start[1]) + 3, float(start[2])))
    return found


def arrows(svg: ET.Element) -> list[tuple[float, float, float, float]]:
    return [
        tuple(float(line.get(end, "0")) for end in ("x1", "y1", "x2", "y2"))  # type: ignore[misc]
        for line in svg.iter(f"{SVG}line")
        if "msg" in line.get("class", "").split()
    ]


def passes(arrow: tuple[float, float, float, float], mark: tuple[float, float]) -> float | None:
    """How far the arrow is from `mark` where it crosses the mark's line, if it crosses it
    between its ends (a mark on its own sender's or receiver's line is its own)."""
    x1, y1, x2, y2 = arrow
    x, y = mark
    if not min(x1, x2) + 1 < x < max(x1, x2) - 1:
        return None
    return abs(y1 + (y2 - y1) * (x - x1) / (x2 - x1) - y)


def test_no_arrow_passes_through_an_event_it_is_not_about() -> None:
    svg = ET.fromstring(draw_lamport(read_trace(FAULTY)))
    found_marks, found_arrows = marks(svg), arrows(svg)
    assert len(found_marks) > 80
    assert len(found_arrows) > 30
    near = sorted(
        (round(distance, 1), arrow, mark)
        for arrow in found_arrows
        for mark in found_marks
        if (distance := passes(arrow, mark)) is not None and distance < CLEAR
    )
    assert near == []


def fault_words(svg: ET.Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Each fault's words and their box (5.5 px a character, 10 px high over the baseline)."""
    found = []
    for t in svg.iter(f"{SVG}text"):
        if t.get("class") == "fault" and t.text:
            x, y, width = float(t.get("x", "0")), float(t.get("y", "0")), 5.5 * len(t.text)
            left = x - width if t.get("text-anchor") == "end" else x
            found.append((t.text, (left, y - 8, left + width, y)))
    return found


def test_no_arrow_crosses_the_words_of_a_fault() -> None:
    """A delay's "+10.5 ms" was struck through by the arrows that pass its event: the words now
    go on the side of the line that no arrow crosses (here, for every one of them)."""
    svg = ET.fromstring(draw_lamport(read_trace(FAULTY)))
    words = fault_words(svg)
    assert len(words) >= 15
    lines = [((x1, y1), (x2, y2)) for x1, y1, x2, y2 in arrows(svg)]
    assert [text for text, box in words if crossings(box, lines)] == []


def test_an_arrows_number_keeps_away_from_the_other_arrows() -> None:
    """A number with another arrow as near as its own reads as that arrow's: y's "5.00" sat on
    z's arrow to f, which already carries "-4.00", and 4 numbers of this diagram had another
    arrow within NEAR pixels. Where every place along its arrow has one, a number keeps one."""
    svg = ET.fromstring(draw_lamport(read_trace(FAULTY)))
    groups = [g for g in svg.iter(f"{SVG}g") if "arrow" in g.get("class", "").split()]
    lines = [(i, line) for i, g in enumerate(groups) for line in g.iter(f"{SVG}line")]
    segments = [
        (i, ((float(n.get("x1", "0")), float(n.get("y1", "0"))), (float(n.get("x2", "0")), float(n.get("y2", "0")))))
        for i, n in lines
    ]
    crowded = []
    for i, g in enumerate(groups):
        for t in g.iter(f"{SVG}text"):
            x, y, width = float(t.get("x", "0")), float(t.get("y", "0")), len(t.text or "") * 6.4 + 4
            box = (x - width / 2 - NEAR, y - 9.5 - NEAR, x + width / 2 + NEAR, y + NEAR)
            if crossings(box, [segment for j, segment in segments if j != i]):
                crowded.append(t.text)
    assert len(groups) > 30
    assert len(crowded) <= 2, crowded


def test_no_words_cover_a_lamport_number() -> None:
    """x's probe answer "waiting grads" was set left of its line, into the next event's "32":
    both sides crossed something, and covering a number counted as little as crossing an arrow."""
    svg = ET.fromstring(draw_lamport(read_trace(FAULTY)))

    def box(t: ET.Element, per_char: float, ascent: float, descent: float) -> tuple[float, float, float, float]:
        x, y, width = float(t.get("x", "0")), float(t.get("y", "0")), per_char * len(t.text or "")
        left = x - width if t.get("text-anchor") == "end" else x
        return (left, y - ascent, left + width, y + descent)

    texts = [t for t in svg.iter(f"{SVG}text") if t.text]
    numbers = [box(t, 5.2, 6.6, 0) for t in texts if t.get("class") == "lamport"]
    words = [(t.text, box(t, 5.5, 7.5, 2.5)) for t in texts if t.get("class") in ("fault", "note status-word")]
    assert len(numbers) > 80
    assert len(words) >= 18
    assert [text for text, found in words if overlaps(found, numbers)] == []


def test_a_waiting_messages_name_is_at_the_end_of_its_own_stub() -> None:
    """Three feeds waiting in step mode: "orchestrator:2" was drawn at "orchestrator:3"'s stub (the
    names are as wide as two stubs are apart, and went above or below them)."""
    circuit = compile_source("(x+y)*z", name="c")
    recorder = Recorder(taps=False)
    recorder.attach(circuit, "c", {g.id: "h1" for g in circuit.gates})
    recorder.begin("r", {"x": -2.0, "y": 5.0, "z": -4.0})
    feeds = [
        (topic("c", "feed", leaf), Feed(circuit="c", sender="orchestrator", run="r", value=v, held=True))
        for leaf, v in (("x", -2.0), ("y", 5.0), ("z", -4.0))
    ]
    recorder.stamp("r", feeds)
    svg = ET.fromstring(draw_lamport(recorder.trace()))
    stubs = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "arrow undelivered"]
    assert len(stubs) == 3
    for stub, name in zip(stubs, ("orchestrator:1", "orchestrator:2", "orchestrator:3"), strict=True):
        line, label = next(stub.iter(f"{SVG}line")), next(stub.iter(f"{SVG}text"))
        assert label.text == name
        x2, y2 = float(line.get("x2", "0")), float(line.get("y2", "0"))
        assert float(label.get("y", "0")) == y2 + 4  # level with its own stub's end
        assert x2 < float(label.get("x", "0")) - len(name) * 3.2  # past it, reading on
