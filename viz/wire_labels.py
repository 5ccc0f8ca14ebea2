"""Where a wire's numbers go in the circuit figure: beside the wire and clear of it at any
slope, and clear of the gates, the other wires and the other numbers as far as the layout allows.

Each wire has one or two labels (its value above and its gradient below; a fork's branch, its
part). A wire's labels may sit at several points along it (FRACTIONS). Each wire takes the point
where they run into least; then every wire chooses again among the others' choices (ROUNDS),
since the first wires placed knew nothing of the later ones. The places depend on the layout
alone, never on the numbers: a pass's numbers fill in one by one without moving.
"""

from __future__ import annotations

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
BOX_CLASH = 40
"""A label on a gate or a label counts as much as this many points of a wire running through it."""
CELL = 32.0


@dataclass(frozen=True)
class Wire:
    """A wire to label: dot's spline (control points, pixels) and, per label, its side (1: above
    the wire, -1: below) and its width."""

    points: tuple[Point, ...]
    labels: tuple[tuple[float, float], ...]


def place(wires: Sequence[Wire], obstacles: Iterable[Box]) -> list[list[Point]]:
    """Each wire's labels' baselines (text-anchor middle), in the order of `Wire.labels`."""
    fixed = list(obstacles)
    lines = _Grid(p for wire in wires for p in samples(list(wire.points), 40))
    options = [[_spots(wire, fraction) for fraction in FRACTIONS] for wire in wires]
    chosen = [spots[0] for spots in options]
    taken: list[list[Box]] = [[] for _ in wires]
    for _ in range(ROUNDS):
        for i, spots_of_wire in enumerate(options):
            others = fixed + [box for j, boxes in enumerate(taken) if j != i for box in boxes]
            chosen[i] = min(spots_of_wire, key=lambda spots: sum(_clashes(box, others, lines) for box, _ in spots))
            taken[i] = [box for box, _ in chosen[i]]
    return [[baseline for _, baseline in spots] for spots in chosen]


def _spots(wire: Wire, fraction: float) -> list[tuple[Box, Point]]:
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


def _clashes(box: Box, others: list[Box], lines: _Grid) -> int:
    left, top, right, bottom = box[0] - MARGIN, box[1] - MARGIN, box[2] + MARGIN, box[3] + MARGIN
    boxes = sum(left < b[2] and b[0] < right and top < b[3] and b[1] < bottom for b in others)
    return BOX_CLASH * boxes + lines.count((left, top, right, bottom))


class _Grid:
    """Points of the wires, bucketed by CELL-sized squares: a box looks only at its own squares."""

    def __init__(self, points: Iterable[Point]) -> None:
        self.cells: defaultdict[tuple[int, int], list[Point]] = defaultdict(list)
        for x, y in points:
            self.cells[int(x // CELL), int(y // CELL)].append((x, y))

    def count(self, box: Box) -> int:
        left, top, right, bottom = box
        cells = itertools.product(
            range(int(left // CELL), int(right // CELL) + 1), range(int(top // CELL), int(bottom // CELL) + 1)
        )
        return sum(left < x < right and top < y < bottom for cell in cells for x, y in self.cells.get(cell, ()))


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
    (ax, ay), (bx, by) = found[index - 1], found[index]
    norm = math.hypot(bx - ax, by - ay) or 1.0
    nx, ny = (by - ay) / norm, -(bx - ax) / norm
    if ny > 0:
        nx, ny = -nx, -ny
    return found[index], (nx, ny)
