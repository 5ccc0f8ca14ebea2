"""The pictures' numbers sit clear of what else is drawn: a wire through "-0.50" reads as 0.50,
and a number on another reads as neither."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.compiler import compile_source
from orchestrator.trace import read_trace
from viz.circuit import WireState, draw_circuit
from viz.lamport import draw_lamport
from viz.wire_labels import choose

SVG = "{http://www.w3.org/2000/svg}"
NEURON = "sigmoid(w0*x0 + w1*x1 + w2)", {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3}
CHAIN = (
    "tanh(x0*y0 + x1*y1 + x2*y2 + x3*y3)",
    {"x0": 1, "y0": -0.5, "x1": 2, "y1": -1.75, "x2": 3, "y2": -3.6, "x3": -4, "y3": 2.75},
)
FORKS = "a = x*y; b = a + x; c = sigmoid(a) * b + x*a", {"x": 1.5, "y": -2}
TWICE = "(x + x) + (x * x)", {"x": 3}
"""Gates that take one value twice, side by side: dot bundled such branches around each gate,
across its neighbour's."""


def wire_points(svg: ET.Element) -> list[tuple[float, float]]:
    """Points every pixel or so along every wire (the paths are M then cubic C segments)."""
    points = []
    for path in svg.iter(f"{SVG}path"):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
        pairs = list(zip(numbers[::2], numbers[1::2], strict=True))
        start = pairs[0]
        for i in range(1, len(pairs) - 2, 3):
            (ax, ay), (bx, by), (cx, cy) = pairs[i : i + 3]
            for k in range(101):
                t, u = k / 100, 1 - k / 100
                points.append(
                    (
                        u**3 * start[0] + 3 * u * u * t * ax + 3 * u * t * t * bx + t**3 * cx,
                        u**3 * start[1] + 3 * u * u * t * ay + 3 * u * t * t * by + t**3 * cy,
                    )
                )
            start = (cx, cy)
    return points


def label_boxes(svg: ET.Element) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Each wire number's glyphs: 13px bold digits are about 7.8 px wide and 9.5 px tall (11px: 6.2, 8)."""
    boxes = []
    for node in svg.iter(f"{SVG}text"):
        classes = set(node.get("class", "").split())
        shown = "".join([node.text or "", *(child.tail or "" for child in node)]).strip()  # not its <title>
        if not classes & {"value", "grad"} or "legend" in classes or not shown:
            continue
        per_char, height = (6.2, 8.0) if "part" in classes else (7.8, 9.5)
        x, y = float(node.get("x", "0")), float(node.get("y", "0"))
        half = len(shown) * per_char / 2
        boxes.append((shown, (x - half + 1, y - height + 1, x + half - 1, y - 1)))
    return boxes


def wire_paths(svg: ET.Element) -> list[list[tuple[float, float]]]:
    """Each wire as a polyline, a point every pixel or so."""
    return [wire_points(ET.fromstring(ET.tostring(path).decode())) for path in svg.iter(f"{SVG}path")]


def _cross(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]) -> bool:
    def side(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


@pytest.mark.parametrize("source", [TWICE[0], "(x + x) + (x + x)", "q = x*x; f = q + x"])
def test_the_branches_of_a_value_a_gate_takes_twice_cross_no_wire(source: str) -> None:
    """Wires meet only where they end (a fork, a gate): the branches of a value a gate takes
    twice come into it one above the other, not around it."""
    paths = wire_paths(ET.fromstring(draw_circuit(compile_source(source))))
    crossing = []
    for i, one in enumerate(paths):
        for other in paths[i + 1 :]:
            ends = [one[0], one[-1], other[0], other[-1]]
            for a, b in itertools.pairwise(one[::3]):
                if any(abs(a[0] - e[0]) + abs(a[1] - e[1]) < 6 for e in ends):
                    continue  # where two wires leave one fork or meet at one gate
                if any(_cross(a, b, c, d) for c, d in itertools.pairwise(other[::3])):
                    crossing.append((a, b))
    assert crossing == []


@pytest.mark.parametrize("case", [NEURON, CHAIN, FORKS, TWICE], ids=["neuron", "chain", "forks", "twice"])
def test_no_wire_runs_through_a_number(case: tuple[str, dict[str, float]]) -> None:
    source, inputs = case
    circuit = compile_source(source)
    every = -12.5  # a long number on every wire ("-12.50"): where the numbers go does not depend on them
    parts = {(source, g.id, port): every for g in circuit.gates for port, source in enumerate(g.inputs)}
    state = WireState(values={g.id: every for g in circuit.gates}, parts=parts, output_value=every, seed=1.0)
    svg = ET.fromstring(draw_circuit(circuit, state))
    points = wire_points(svg)
    crossed = [
        shown
        for shown, (left, top, right, bottom) in label_boxes(svg)
        if any(left < x < right and top < y < bottom for x, y in points)
    ]
    assert len(label_boxes(svg)) > 2 * len(inputs)
    assert crossed == []


def lamport_words(trace_file: Path) -> list[tuple[str, set[str], tuple[float, float, float, float]]]:
    """Every word of the trace's Lamport diagram but its caption, key and heads: (text, classes, box)."""
    svg = ET.fromstring(draw_lamport(read_trace(trace_file)))
    words = []
    for node in svg.iter(f"{SVG}text"):
        classes = set(node.get("class", "").split())
        shown = "".join([node.text or "", *(child.tail or "" for child in node)]).strip()
        if not shown or classes & {"caption", "legend", "host", "node"}:
            continue
        x, y = float(node.get("x", "0")), float(node.get("y", "0"))
        width = len(shown) * (5.0 if classes & {"lamport", "fault", "note"} else 6.0)
        anchor = node.get("text-anchor", "middle")
        left = x - width / 2 if anchor == "middle" else x - width if anchor == "end" else x
        words.append((shown, classes, (left + 1, y - 7, left + width - 1, y - 1)))
    return words


def clashes(words: list[tuple[str, set[str], tuple[float, float, float, float]]]) -> list[tuple[str, str]]:
    """The arrows' words that overlap another word."""
    numbers = [w for w in words if w[1] & {"value", "grad", "note"}]
    return [
        (a[0], b[0])
        for a in numbers
        for b in words
        if a is not b and a[2][0] < b[2][2] and b[2][0] < a[2][2] and a[2][1] < b[2][3] and b[2][1] < a[2][3]
    ]


def test_a_lamport_diagrams_numbers_overlap_no_other_words() -> None:
    """The README's faulty run: a message's number once sat on a delay's "+10.7 ms" and on
    Lamport numbers; each now goes where along its arrow it covers no other words."""
    words = lamport_words(Path(__file__).parents[2] / "docs" / "img" / "faulty.jsonl")
    said = [w[0] for w in words if w[1] & {"value", "grad", "note"}]
    assert len(said) >= 24  # every value and gradient; a probe's and a release's word once each
    assert (said.count("probe"), said.count("release")) == (1, 1)  # five of each piled up where the arrows start
    assert clashes(words) == []


def test_a_short_dropped_arrows_number_goes_below_it_when_every_place_above_is_taken() -> None:
    """`draw lamport "(x+y)*z" x=-2 y=5 z=-4 --faults drop=0.3,seed=1 --timeout 1`: add_1's
    dropped 3.00 to f runs beside z's -4.00 to f, and every place above it sat on that number:
    they read "3.00 4.00", z's value positive."""
    words = lamport_words(Path(__file__).parents[1] / "data" / "dropped-beside.jsonl")
    values = sorted(w[0] for w in words if "value" in w[1])
    assert values == ["-2.00", "-2.00", "-4.00", "-4.00", "3.00", "5.00", "5.00"]  # fed, sent on, dropped
    assert clashes(words) == []
    svg = ET.fromstring(draw_lamport(read_trace(Path(__file__).parents[1] / "data" / "dropped-beside.jsonl")))
    (dropped,) = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "arrow dropped" and "add_1" in (g[0].text or "")]
    line = next(e for e in dropped if e.tag == f"{SVG}line")
    number = next(e for e in dropped if e.tag == f"{SVG}text")
    (x1, y1, x2, y2) = (float(line.get(k, "0")) for k in ("x1", "y1", "x2", "y2"))
    x, y = float(number.get("x", "0")), float(number.get("y", "0"))
    assert number.text == "3.00"
    assert y - 8 > y1 + (y2 - y1) * (x - x1) / (x2 - x1)  # its letters below the line where they stand


def test_a_line_that_clips_a_corner_of_a_label_counts() -> None:
    """Lines are found by the squares they pass through: one that only clips a square's corner
    between two of its sample points was missed, and a number could be placed on it."""
    candidates = [[[((100.0, 100.0, 115.0, 115.0), (107.5, 115.0))], [((300.0, 300.0, 320.0, 320.0), (310.0, 320.0))]]]
    assert choose(candidates, [], [((100.0, 130.0), (130.0, 100.0))], rounds=1) == [1]


def test_every_word_an_arrow_may_cross_is_drawn_on_a_halo() -> None:
    """A status arrow ran through x's Lamport number 10, which read "0": words an arrow may
    cross (numbers, faults, notes, Lamport numbers) are drawn over a white outline of themselves."""
    svg = draw_lamport(read_trace(Path(__file__).parents[2] / "docs" / "img" / "faulty.jsonl"))
    haloed = re.search(r"\n([^\n{]*)\{ paint-order: stroke; stroke: white;", svg)
    assert haloed is not None
    scoped = {f"svg.lamport-diagram {css}" for css in (".value", ".grad", ".fault", ".note", ".lamport")}
    assert scoped <= {c.strip() for c in haloed[1].split(",")}
