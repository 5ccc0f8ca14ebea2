"""Where a wire's numbers go in the circuit figure: beside the wire and clear of it at any
slope, and clear of the gates, the other wires and the other numbers as far as the layout allows.

Each wire has one or two labels (its value above and its gradient below; a fork's branch, its
part). A wire's labels may sit at several points along it (FRACTIONS). Each wire takes the point
where they run into least; then every wire chooses again among the others' choices (ROUNDS),
since the first wires placed knew nothing of the later ones. The places depend on the layout
alone, never on the numbers: a pass's numbers fill in one by one without moving.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Point = tuple[float, float]
Box = tuple[float, float, float, float]
"""left, top, right, bottom, in the figure's pixels (y down)."""

FRACTIONS = (0.4, 0.3, 0.5, 0.25, 0.6, 0.2, 0.7)
"""Where along its wire a wire's labels may sit, best first: before the middle, where converging
wires are further apart."""
ROUNDS = 3
LABEL_HEIGHT, LABEL_GAP, MARGIN = 9.5, 5.0, 8.0
"""A label's digits' height, its distance from its wire, and the room wanted around it."""
ON_LABEL, ON_MARK, ON_VERTICAL, ON_LINE = 30, 8, 4, 1
"""What a label's running into costs: another label (unreadable, both), a gate or an event's
mark, a lifeline, a line through it (its own wire's too: the same for all its places)."""
ON_OTHER_LINE, NEAR = 6, 2 * LABEL_GAP + 2
"""What another thing's line within NEAR pixels of a label costs, where its own line is
LABEL_GAP away (`choose`'s own_lines): the label is then as much that line's as its own."""
CELL, SEGMENT_CELL = 32.0, 128.0
"""The squares labels and marks, and lines (long ones: a Lamport arrow), are bucketed by."""


@dataclass(frozen=True)
class Wire:
    """A wire to label: dot's spline (control points, pixels) and, per label, its side (1: above
    the wire, -1: below) and its width."""

    points: tuple[Point, ...]
    labels: tuple[tuple[float, float], ...]


def place(wires: Sequence[Wire], obstacles: Iterable[Box]) -> list[list[Point]]:
    """Each wire's labels' baselines (text-anchor middle), in the order of `Wire.labels`."""
    lines = [samples(list(wire.points), 12) for wire in wires]
    candidates = [[_spots(wire, fraction) for fraction in FRACTIONS] for wire in wires]
    chosen = choose(candidates, obstacles, lines, ROUNDS)
    return [[baseline for _, baseline in candidates[i][k]] for i, k in enumerate(chosen)]


Spots = list[tuple[Box, Point]]
"""One way to place a thing's labels: each label's box and baseline."""


def choose(
    candidates: Sequence[Sequence[Spots]],
    obstacles: Iterable[Box],
    lines: Sequence[Sequence[Point]],
    rounds: int,
    verticals: Sequence[float] = (),
    *,
    own_lines: bool = False,
) -> list[int]:
    """For each thing (a wire, an arrow), which of its candidate Spots runs into least: of the
    obstacles, the `lines` (polylines: each segment through a label counts), the `verticals`
    (the x of lines down the whole figure: a Lamport diagram's lifelines) and the labels
    already placed. With `own_lines`, lines[i] is thing i's own (a Lamport arrow's): another
    line as near a label as its own costs ON_OTHER_LINE, since the label then reads as that
    line's. The first round places the things in order, each seeing those before it (a diagram
    that grows keeps its first labels where they were); every later round places each again
    among all the others."""
    fixed = _Boxes()
    for box in obstacles:
        fixed.add(-1, box)
    segments = _Segments(lines)
    columns = sorted(verticals)
    placed = _Boxes()
    chosen = [0] * len(candidates)
    for _ in range(rounds):
        for i, options in enumerate(candidates):
            placed.remove(i)
            own = list(itertools.pairwise(lines[i])) if own_lines and i < len(lines) else []

            def cost(spots: Spots, own: list[tuple[Point, Point]] = own) -> int:
                found = sum(
                    ON_LABEL * placed.count(b)
                    + ON_MARK * fixed.count(b)
                    + ON_VERTICAL * _between(columns, b[0], b[2])
                    + (0 if own_lines else ON_LINE * segments.count(b))
                    for b in _grown(spots)
                )
                if own_lines:  # the lines within NEAR (one count: a diagram is drawn again as it grows)
                    for b in _grown(spots, NEAR):
                        through = segments.count(b)
                        others = through - sum(_crosses(p, q, b) for p, q in own)
                        found += ON_LINE * through + ON_OTHER_LINE * others
                return found

            chosen[i] = min(range(len(options)), key=lambda k: cost(options[k]))
            for box, _ in options[chosen[i]]:
                placed.add(i, box)
    return chosen


def _between(sorted_xs: list[float], left: float, right: float) -> int:
    """How many of `sorted_xs` lie between `left` and `right`."""
    return bisect.bisect_left(sorted_xs, right) - bisect.bisect_right(sorted_xs, left)


def _grown(spots: Spots, margin: float = MARGIN) -> list[Box]:
    return [(b[0] - margin, b[1] - margin, b[2] + margin, b[3] + margin) for b, _ in spots]


def _spots(wire: Wire, fraction: float) -> Spots:
    middle, normal = along(list(wire.points), fraction)
    return [beside(middle, normal, side, width) for side, width in wire.labels]


def beside(at: Point, normal: Point, side: float, width: float) -> tuple[Box, Point]:
    """A label's box and baseline beside its wire at `at`: along the normal (side 1: above, -1:
    below), as far as the box reaches towards the wire at that slope, so that a steep wire never
    runs through its own numbers (nor through a minus sign)."""
    nx, ny = normal
    reach = abs(nx) * width / 2 + abs(ny) * LABEL_HEIGHT / 2 + LABEL_GAP
    x, y = at[0] + side * reach * nx, at[1] + side * reach * ny
    return (x - width / 2, y - LABEL_HEIGHT / 2, x + width / 2, y + LABEL_HEIGHT / 2), (x, y + LABEL_HEIGHT / 2)


def _cells(box: Box, size: float = CELL) -> Iterable[tuple[int, int]]:
    left, top, right, bottom = box
    return itertools.product(
        range(int(left // size), int(right // size) + 1), range(int(top // size), int(bottom // size) + 1)
    )


class _Boxes:
    """Boxes by owner, bucketed by CELL-sized squares: a box looks only at its own squares."""

    def __init__(self) -> None:
        self.cells: defaultdict[tuple[int, int], dict[int, list[Box]]] = defaultdict(dict)
        self.owned: defaultdict[int, list[Box]] = defaultdict(list)

    def add(self, owner: int, box: Box) -> None:
        self.owned[owner].append(box)
        for cell in _cells(box):
            self.cells[cell].setdefault(owner, []).append(box)

    def remove(self, owner: int) -> None:
        for box in self.owned.pop(owner, []):
            for cell in _cells(box):
                self.cells[cell].pop(owner, None)

    def count(self, box: Box) -> int:
        """How many boxes `box` overlaps."""
        return overlaps(box, {b for cell in _cells(box) for boxes in self.cells.get(cell, {}).values() for b in boxes})


class _Segments:
    """The segments of polylines, bucketed by the CELL-sized squares they pass through."""

    def __init__(self, lines: Iterable[Sequence[Point]]) -> None:
        self.cells: defaultdict[tuple[int, int], set[tuple[Point, Point]]] = defaultdict(set)
        for line in lines:
            for a, b in itertools.pairwise(line):
                pieces = max(1, math.ceil(math.hypot(b[0] - a[0], b[1] - a[1]) / SEGMENT_CELL))
                for k in range(pieces):  # each piece under every square of its box: a corner clipped counts
                    x0, y0 = a[0] + (b[0] - a[0]) * k / pieces, a[1] + (b[1] - a[1]) * k / pieces
                    x1, y1 = a[0] + (b[0] - a[0]) * (k + 1) / pieces, a[1] + (b[1] - a[1]) * (k + 1) / pieces
                    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
                    for cell in _cells(box, SEGMENT_CELL):
                        self.cells[cell].add((a, b))

    def count(self, box: Box) -> int:
        """How many segments pass through `box`."""
        return crossings(box, {segment for cell in _cells(box, SEGMENT_CELL) for segment in self.cells.get(cell, ())})


def overlaps(box: Box, boxes: Iterable[Box]) -> int:
    """How many of `boxes` `box` overlaps."""
    left, top, right, bottom = box
    return sum(left < b[2] and b[0] < right and top < b[3] and b[1] < bottom for b in boxes)


def crossings(box: Box, segments: Iterable[tuple[Point, Point]]) -> int:
    """How many of `segments` pass through `box`."""
    return sum(_crosses(a, b, box) for a, b in segments)


def _crosses(a: Point, b: Point, box: Box) -> bool:
    """Whether segment a-b passes through `box` (Liang and Barsky's clipping)."""
    low, high = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - box[0]), (dx, box[2] - a[0]), (-dy, a[1] - box[1]), (dy, box[3] - a[1])):
        if p == 0:
            if q < 0:
                return False
        elif p < 0:
            low = max(low, q / p)
        else:
            high = min(high, q / p)
    return low <= high


def samples(points: list[Point], per_segment: int = 10) -> list[Point]:
    """Points along dot's spline (cubic Bezier segments): its start, then `per_segment` on each."""
    found: list[Point] = [points[0]]
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i : i + 4]
        for k in range(1, per_segment + 1):
            t = k / per_segment
            u = 1 - t
            found.append(
                (
                    u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                    u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
                )
            )
    return found


def along(points: list[Point], fraction: float) -> tuple[Point, Point]:
    """The point `fraction` of the way along the spline (by sampled length), and the unit normal
    there that points up."""
    found = samples(points)
    lengths = [0.0]
    for (ax, ay), (bx, by) in itertools.pairwise(found):
        lengths.append(lengths[-1] + math.hypot(bx - ax, by - ay))
    index = max(1, next(i for i, length in enumerate(lengths) if length >= fraction * lengths[-1]))
    return found[index], up_normal(found[index - 1], found[index])


def up_normal(a: Point, b: Point) -> Point:
    """The unit normal of the line from `a` to `b` that points up (the side a number goes)."""
    (ax, ay), (bx, by) = a, b
    length = math.hypot(bx - ax, by - ay) or 1.0
    nx, ny = (by - ay) / length, (ax - bx) / length
    return (-nx, -ny) if ny > 0 else (nx, ny)
