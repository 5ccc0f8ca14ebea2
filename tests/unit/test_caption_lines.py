"""A long caption is cut into lines as wide as its picture: it made the picture as wide as itself."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.compiler import compile_source
from orchestrator.trace import read_trace
from viz.caption import caption
from viz.circuit import draw_circuit
from viz.lamport import draw_lamport
from viz.svg import CAPTION_CHAR

SVG = "{http://www.w3.org/2000/svg}"
FAULTY = Path(__file__).parents[2] / "docs" / "img" / "faulty.jsonl"
LONG = "; ".join(
    [
        "f = x * y at x=2, y=3",
        "faults drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=7",
        "run 3 of 3 (9c1f04e2a7b3d615), the same inputs again under a fresh run id",
        "the run failed: did not finish within 1 s; not finished: input(x) has 0 of 1 gradient(s)",
    ]
)


def captions(svg: str) -> list[ET.Element]:
    return [e for e in ET.fromstring(svg).iter(f"{SVG}text") if e.get("class") == "caption"]


def test_a_long_caption_is_cut_into_lines_and_the_figure_keeps_its_width() -> None:
    neuron = compile_source("sigmoid(w0*x0 + w1*x1 + w2)")
    short = ET.fromstring(draw_circuit(neuron, caption="f = x * y"))
    svg = draw_circuit(neuron, caption=LONG)
    lines = captions(svg)
    assert len(lines) > 1
    assert " ".join(line.text or "" for line in lines) == LONG  # every word, in order
    assert all(len(line.text or "") * CAPTION_CHAR <= float(short.get("width", "0")) for line in lines)
    assert [float(line.get("y", "0")) for line in lines] == [24 + 17 * i for i in range(len(lines))]
    assert ET.fromstring(svg).get("width") == short.get("width")  # not 7 px a character of the caption
    assert float(ET.fromstring(svg).get("height", "0")) == float(short.get("height", "0")) + 17 * (len(lines) - 1)


def test_a_caption_line_ends_after_a_clause_where_one_fits() -> None:
    trace = read_trace(FAULTY)
    lines = [line.text for line in captions(draw_lamport(trace, caption=caption(trace)))]
    assert lines == [
        "f = (x + y) * z at x=-2, y=5, z=-4; faults drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=2;",
        "the run failed: did not finish within 1 s",
    ]
    assert ET.fromstring(draw_lamport(trace, caption=caption(trace))).get("width") == "740"
