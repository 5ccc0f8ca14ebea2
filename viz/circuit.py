"""The CS231n figure of a circuit: gates as circles with their operator, a wire per edge with
its variable's name, the value in green above the wire and the gradient in red below.

The numbers come from a trace, never from a separate evaluation: a value appears once its
forward message has been delivered, a gradient once its backward message has (with `step`,
after the trace's first K events), and until then the place stays blank, never 0. Where a
wire forks, the trunk carries the sum of the branches' gradients ("gradients add up at
forks"); each branch carries its own contribution.

Graphviz `dot` lays the circuit out (the same engine micrograd's draw_dot uses); the SVG is
written here, so that every number sits exactly above or below its wire and carries a class.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import graphviz

from gates.ops import OPS
from gates.protocol import ORCHESTRATOR
from gates.trace_records import TraceEvent, TraceMsg, loses_its_message
from orchestrator.circuit import Circuit, GateDef
from orchestrator.explain import numbered
from orchestrator.trace import Trace
from viz.svg import ERROR, GREEN, GREY, RED, DrawError, attr, captioned, document, num, short, text
from viz.wire_labels import Box, Point, Wire, place

MAX_GATES = 60
"""Past this many gates the figure is a hairball: `draw_circuit` refuses and says what to do."""
SCALE = 72.0  # dot works in points (72 per inch), y up; the SVG in pixels, y down
TOP, SIDE, BOTTOM = 46.0, 24.0, 42.0
LEGEND_WIDTH = SIDE + 110 + 110 + SIDE

STYLE = f"""
.gate {{ fill: #f5f5f4; stroke: #1f2937; stroke-width: 1.5; }}
.symbol {{ font-size: 15px; fill: #111827; }}
.wire {{ fill: none; stroke: #1f2937; stroke-width: 1.4; }}
.fork {{ fill: #1f2937; }}
.leaf, .output-name {{ font-size: 15px; font-style: italic; fill: #111827; }}
.name {{ font-size: 11px; font-style: italic; fill: {GREY}; }}
.value {{ font-size: 13px; fill: {GREEN}; font-weight: 600; }}
.grad {{ font-size: 13px; fill: {RED}; font-weight: 600; }}
.grad.part {{ font-size: 11px; font-weight: 400; }}
.lost {{ font-size: 11px; font-style: italic; fill: {ERROR}; }}
.caption {{ font-size: 13px; fill: #111827; }}
.legend {{ font-size: 11px; fill: {GREY}; }}
.legend.value-key {{ fill: {GREEN}; }}
.legend.grad-key {{ fill: {RED}; }}
.legend.lost-key {{ fill: {ERROR}; font-style: italic; }}
"""


@dataclass
class WireState:
    """What the wires show: only numbers whose messages have been delivered."""

    values: dict[str, float] = field(default_factory=dict)
    """gate -> its output value, once a reader has received its forward message."""
    parts: dict[tuple[str, str, int], float] = field(default_factory=dict)
    """(gate, consumer, port) -> that edge's gradient contribution, once the gate received it."""
    output_value: float | None = None
    seed: float | None = None
    events: int = 0
    """How many events of the trace this state has seen."""
    lost_values: set[str] = field(default_factory=set)
    """Gates whose forward message was dropped (the output's too, to the orchestrator): "lost"
    where the value would be, unless a copy of it came after all."""
    lost_parts: set[tuple[str, str, int]] = field(default_factory=set)
    """(gate, consumer, port) whose backward message was dropped; (output, orchestrator, 0): the seed."""

    def total(self, circuit: Circuit, gate: str) -> float | None:
        """The gate's gradient: the sum over every edge that reads it, once all have arrived."""
        edges = circuit.edges_out[gate]
        found = [self.parts.get((gate, consumer, port)) for consumer, port in edges]
        if not edges or any(part is None for part in found):
            return None
        return math.fsum(part for part in found if part is not None)


def state_at(trace: Trace, run: str | None = None, step: int | None = None) -> WireState:
    """The wires after the trace's first `step` events (all of them without `step`), for one run."""
    chosen = trace.run_id(run)
    if step is not None and not 0 <= step <= len(trace.events):
        raise DrawError(f"--step {step}: the trace has {len(trace.events)} events; give 0 to {len(trace.events)}")
    own = [e.seq for e in trace.events if e.run == chosen]
    if step is not None and own and step < own[0] - 1 and len(trace.header.runs) > 1:  # a blank picture, silently
        raise DrawError(
            f"--step {step}: --step counts the whole trace's events, and run {chosen}'s are {own[0]} to "
            f"{own[-1]}; give {own[0] - 1} to {own[-1]} (--run picks another run)"
        )
    state = WireState()
    shown = trace.shown_received(chosen)  # receipts lost with a host, shown by what crossed after
    for event in trace.events:
        if step is not None and event.seq > step:
            break
        state.events = event.seq
        if event.run != chosen or event.msg is None:
            continue
        if event.type == "receive":
            _delivered(trace, state, event.msg, event.node)
        elif loses_its_message(event):
            _dropped(state, event.msg)
        elif event.type == "cross":
            for reader in event.msg.dest:
                proof = shown.get((event.msg.id, reader))
                if proof is not None and (step is None or proof.seq <= step):
                    _delivered(trace, state, event.msg, reader)
    return state


def step_of_message(trace: Trace, run: str | None, k: int) -> int:
    """The events up to --explain's line k (from 1): its lines number, over every run of the trace,
    each message that crossed the broker and each fault (orchestrator/explain.py, `numbered`), in
    the order the orchestrator learned of them (TraceEvent.line). A message's line ends at its
    delivery (its first receipt, or its crossing where no receipt was recorded), a fault's at
    the fault; the events up to line k are those up to the latest end of lines 1 to k. A fault
    told late (its gate's events came after the message crossed) ends before lines told earlier:
    the picture at its line keeps what they showed."""
    chosen = trace.run_id(run)
    # by their number: the order --explain told them, which the file's (causal) order need not be;
    # a trace written before events had one is counted in the file's order
    lines = {e.line: e for e in trace.events if e.line is not None}
    if not lines:
        lines = dict(enumerate((e for e in trace.events if numbered(e)), 1))
    last = max(lines, default=0)
    if not 1 <= k <= last:
        raise DrawError(f"--message {k}: --explain tells this trace in {last} numbered lines; give 1 to {last}")
    if k not in lines:
        raise DrawError(f"--message {k}: this trace has no event of --explain's line {k} (a file cut short?)")
    line = lines[k]
    if line.run != chosen:
        own = sorted(i for i, e in lines.items() if e.run == chosen)
        these = f"run {chosen}'s are lines {own[0]} to {own[-1]}" if own else f"run {chosen} has none"
        raise DrawError(f"--message {k}: --explain's line {k} is of run {line.run}; {these} (--run picks the run)")
    delivered: dict[str, int] = {}  # each message's first receipt
    for e in trace.events:
        if e.run == chosen and e.type == "receive" and e.msg is not None:
            delivered.setdefault(e.msg.id, e.seq)

    def end(told: TraceEvent) -> int:
        if told.type != "cross" or told.msg is None:
            return told.seq
        return delivered.get(told.msg.id, told.seq)

    return max(end(e) for i, e in lines.items() if i <= k and e.run == chosen)


def _delivered(trace: Trace, state: WireState, m: TraceMsg, reader: str) -> None:
    """`reader` has message `m`: its number goes on the wire."""
    if m.phase == "forward" and m.value is not None:
        state.values.setdefault(m.src, m.value)
        if reader == ORCHESTRATOR and m.src == trace.circuit.output and state.output_value is None:
            state.output_value = m.value
    elif m.phase == "backward" and m.grad is not None:
        state.parts.setdefault((reader, m.src, m.port or 0), m.grad)
        if m.src == ORCHESTRATOR and state.seed is None:
            state.seed = m.grad


def _dropped(state: WireState, m: TraceMsg) -> None:
    """Message `m` was dropped (by a fault injector, or a student in step mode): its number is lost."""
    if m.phase == "forward":
        state.lost_values.add(m.src)
    elif m.phase == "feed":  # the leaf never has its value to send
        state.lost_values.update(m.dest)
    elif m.phase == "backward":
        for reader in m.dest:
            state.lost_parts.add((reader, m.src, m.port or 0))


def symbol(g: GateDef) -> str:
    """The operator drawn in the gate's circle: the op table's symbol (pow shows its exponent)."""
    if g.op == "pow":
        return f"x^{short(g.param)}"
    written = OPS[g.op].symbol
    return "\u2212x" if g.op == "neg" else "1/x" if g.op == "inv" else written.replace("-", "\u2212")


def _layout(circuit: Circuit) -> dict[str, object]:
    """dot's layout of the circuit, as its JSON output."""
    dot = graphviz.Digraph(
        graph_attr={"rankdir": "LR", "ranksep": "1.3", "nodesep": "1.0", "splines": "spline"},
        node_attr={"fontname": "Helvetica", "fontsize": "14"},
        edge_attr={"arrowhead": "none"},
    )
    for g in circuit.gates:
        if g.op == "input":
            dot.node(g.id, label=g.id, shape="plaintext", width="0.3")
        elif g.op == "const":
            dot.node(g.id, label=num(g.param), shape="plaintext", width="0.3")
        else:
            dot.node(g.id, label=symbol(g), shape="circle", width="0.5", margin="0.04")
    for gate, readers in _readers(circuit).items():
        if len(readers) > 1:
            dot.node(_fork(gate), shape="point", width="0.07")
            dot.edge(gate, _fork(gate))
            for reader, _ in readers:
                dot.edge(_fork(gate), reader)
        for reader, _ in readers if len(readers) == 1 else []:
            dot.edge(gate, reader)
    dot.node(_sink(circuit), label=circuit.output, shape="plaintext", width="0.3")
    dot.edge(circuit.output, _sink(circuit))
    try:
        layout: dict[str, object] = json.loads(dot.pipe(format="json", engine="dot"))
    except graphviz.ExecutableNotFound as exc:
        raise DrawError("drawing a circuit needs Graphviz's `dot`: apt-get install graphviz") from exc
    return layout


def _readers(circuit: Circuit) -> dict[str, list[tuple[str, int]]]:
    """gate -> the (consumer, port) edges of gates that read it: the output's own wire to the
    orchestrator is drawn apart, as its sink."""
    return {gate: [edge for edge in edges if edge[0] != ORCHESTRATOR] for gate, edges in circuit.edges_out.items()}


def _fork(gate: str) -> str:
    return f"{gate} fork"  # a space: no gate id can contain one


def _sink(circuit: Circuit) -> str:
    return f"{circuit.output} output"


def check_size(circuit: Circuit, max_gates: int = MAX_GATES) -> None:
    """DrawError if the figure of `circuit` would be a hairball (checked before anything is run for it)."""
    if len(circuit.gates) > max_gates:
        raise DrawError(
            f"the circuit has {len(circuit.gates)} gates; its figure stays readable up to {max_gates}. "
            "Draw a part of it (a smaller expression), read a run as sentences (gatemesh run ... --explain), "
            "or raise the limit with --max-gates"
        )


def draw_circuit(
    circuit: Circuit, state: WireState | None = None, *, caption: str = "", max_gates: int = MAX_GATES
) -> str:
    """The figure as a standalone SVG document; without `state`, the bare circuit (every number blank)."""
    check_size(circuit, max_gates)
    state = state or WireState()
    plan = _plan(circuit)
    labels = [svg for wire in plan.labelled for svg in _labels(circuit, state, wire)]
    width = max(plan.width, LEGEND_WIDTH)  # the legend on one line
    legend = [
        text(SIDE, plan.height - 12, "value (forward)", "legend value-key", anchor="start"),
        text(SIDE + 110, plan.height - 12, "gradient (backward)", "legend grad-key", anchor="start"),
    ]
    if state.lost_values or state.lost_parts:  # said where it happened: a figure without drops keeps its legend
        lost = "lost: its message dropped"
        legend.append(text(SIDE + 240, plan.height - 12, lost, "legend lost-key", anchor="start"))
        width = max(width, SIDE + 240 + 140 + SIDE)
    needed, added, body = captioned(caption, SIDE, width, [*plan.wires, *plan.shapes, *labels, *legend])
    title = caption or f"circuit {circuit.name}"
    return document(max(width, needed), plan.height + added, STYLE, body, title, "circuit-figure")


@dataclass(frozen=True)
class _Plan:
    """A circuit's figure without its numbers: drawn once per circuit, filled in by every state."""

    width: float
    height: float
    wires: tuple[str, ...]
    shapes: tuple[str, ...]
    labelled: tuple[_Labelled, ...]


class _Labelled(NamedTuple):
    """A drawn wire whose numbers the plan placed."""

    tail: str
    head: str
    port: int | None
    """A fork's branch: the port of `head` it feeds (None: a gate's own wire, or the output)."""
    ports: int
    """How many of this fork's branches feed `head` (`x*x`: 2)."""
    baselines: tuple[Point, ...]


@functools.lru_cache(maxsize=8)
def _plan(circuit: Circuit) -> _Plan:
    layout = _layout(circuit)
    bb = [float(v) for v in str(layout["bb"]).split(",")]
    height = bb[3] - bb[1]

    def at(x: float, y: float) -> Point:
        return SIDE + x - bb[0], TOP + height - (y - bb[1])

    objects = layout["objects"]
    assert isinstance(objects, list)
    nodes = {o["name"]: o for o in objects}
    ids = {o["_gvid"]: o["name"] for o in objects}
    edges = layout.get("edges", [])
    assert isinstance(edges, list)
    drawn = [(ids[edge["tail"]], ids[edge["head"]], [at(x, y) for x, y in _spline(edge["pos"])]) for edge in edges]
    readers = _readers(circuit)
    branches: Counter[tuple[str, str]] = Counter()
    """Branches drawn so far from a fork to a reader: `x*x` reads x twice, by two branches."""
    ports: list[tuple[int | None, int]] = []
    sides: list[tuple[tuple[float, float], ...]] = []
    for i, (tail, head, _) in enumerate(drawn):
        fed = [port for reader, port in readers[tail.removesuffix(" fork")] if reader == head]
        k = branches[tail, head]
        branches[tail, head] += 1
        if not tail.endswith(" fork"):  # a gate's own wire, or the output's: its value above, its gradient below
            ports.append((None, 0))
            sides.append(((1.0, LABEL_WIDTH), (-1.0, LABEL_WIDTH)))
            continue
        ports.append((fed[k], len(fed)))
        if len(fed) > 1:
            r = float(nodes[head]["width"]) * SCALE / 2
            fork = _centre(nodes[tail], at)  # not where dot clipped each edge: the branches would cross there
            drawn[i] = (tail, head, _branch(fork, _centre(nodes[head], at), r, k, len(fed)))
        above = len(fed) > 1 and k == 0  # a branch's part below it; the top one of several into one gate above
        sides.append(((1.0 if above else -1.0, PART_WIDTH),))
    to_label = [Wire(tuple(points), side) for (_, _, points), side in zip(drawn, sides, strict=True)]
    baselines = place(to_label, [_covers(circuit, name, node, at) for name, node in nodes.items()])
    return _Plan(
        width=bb[2] - bb[0] + 2 * SIDE,
        height=height + TOP + BOTTOM,
        wires=tuple(
            f'<path class="wire" d={attr(_path(points))}><title>{t} \u2192 {h}</title></path>' for t, h, points in drawn
        ),
        shapes=tuple(_node(circuit, name, node, at) for name, node in nodes.items()),
        labelled=tuple(
            _Labelled(t, h, port, count, tuple(spots))
            for (t, h, _), (port, count), spots in zip(drawn, ports, baselines, strict=True)
        ),
    )


LABEL_WIDTH, PART_WIDTH = 44.0, 34.0
"""A wire label's room: wide enough for "-0.123" (13px bold), or a branch's part (11px). Fixed,
not measured: the numbers fill in during a pass, and must not move as they do."""


def _labels(circuit: Circuit, state: WireState, wire: _Labelled) -> list[str]:
    """The numbers of one drawn wire: trunk (gate -> fork or reader), branch (fork -> reader) or output."""
    tail, head, port, ports, baselines = wire
    if port is not None:  # a branch: its own contribution only
        gate = tail.removesuffix(" fork")
        title = f"d{circuit.output}/d{gate} through {head}" + (f", its input {port + 1}" if ports > 1 else "")
        part = state.parts.get((gate, head, port))
        if part is None and (gate, head, port) in state.lost_parts:
            return [text(*baselines[0], "lost", "lost grad-lost", title=f"{title}: its message was dropped")]
        return [text(*baselines[0], num(part), "grad part", title=title)]
    if head.endswith(" output"):
        value, grad, name = state.output_value, state.seed, circuit.output
        value_lost = circuit.output in state.lost_values
        grad_lost = (circuit.output, ORCHESTRATOR, 0) in state.lost_parts
    else:
        value, grad, name = state.values.get(tail), state.total(circuit, tail), tail
        value_lost = tail in state.lost_values
        grad_lost = any(part[0] == tail for part in state.lost_parts)
    if value is None and value_lost:
        shown_value = text(*baselines[0], "lost", "lost value-lost", title=f"{name}: its value's message was dropped")
    else:
        title = f"{name} = {value}" if value is not None else f"{name}: not yet"
        shown_value = text(*baselines[0], num(value), "value", title=title)
    if grad is None and grad_lost:
        said = f"d{circuit.output}/d{name}: a gradient's message to it was dropped"
        shown_grad = text(*baselines[1], "lost", "lost grad-lost", title=said)
    else:
        shown_grad = text(
            *baselines[1], num(grad), "grad", title=f"d{circuit.output}/d{name} = {grad}" if grad is not None else ""
        )
    return [shown_value, shown_grad]


def _centre(node: dict[str, str], at: Callable[[float, float], Point]) -> Point:
    """Where dot put a node, in the picture's pixels."""
    x, y = map(float, node["pos"].split(","))
    return at(x, y)


def _covers(circuit: Circuit, name: str, node: dict[str, str], at: Callable[[float, float], Point]) -> Box:
    """What a node covers: a gate's circle and the name below it, a leaf's or the output's name."""
    x, y = _centre(node, at)
    if name.endswith(" fork"):
        return (x - 3, y - 3, x + 3, y + 3)
    if name.endswith(" output") or circuit.by_id[name].op in ("input", "const"):
        half = 4.5 * len(circuit.output if name.endswith(" output") else name) + 2
        return (x - half, y - 9, x + half, y + 9)
    r = float(node["width"]) * SCALE / 2
    half = max(r, 3.5 * len(name))
    return (x - half, y - r, x + half, y + r + 16)


def _node(circuit: Circuit, name: str, node: dict[str, str], at: Callable[[float, float], Point]) -> str:
    x, y = _centre(node, at)
    if name.endswith(" fork"):
        return f'<circle class="fork" cx="{x:.1f}" cy="{y:.1f}" r="3"/>'
    if name.endswith(" output"):
        return text(x, y, circuit.output, "output-name", centred=True)
    g = circuit.by_id[name]
    if g.op in ("input", "const"):
        label = g.id if g.op == "input" else num(g.param)
        return text(x, y, label, f"leaf {g.op}", title=f"{g.op} {g.id}", centred=True)
    r = float(node["width"]) * SCALE / 2
    hover = f"<title>{g.op}({', '.join(g.inputs)}) \u2192 {g.id}</title>"
    return (
        f'<g class={attr("gate-group op-" + g.op)}>{hover}<circle class="gate" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"/>'
        f"{text(x, y, symbol(g), 'symbol', centred=True)}{text(x, y + r + 13, g.id, 'name')}</g>"
    )


def _branch(fork: Point, centre: Point, r: float, k: int, n: int) -> list[Point]:
    """The k-th of n branches from a fork to one gate that takes the value n times (`x + x`): a
    curve of its own into the gate's left side, the first highest. dot bundles such edges and
    sends them around the gate, across the branches to its neighbours."""
    angle = math.radians(45) * (1 - 2 * k / (n - 1))  # from 45 degrees above the middle to 45 below
    end = (centre[0] - r * math.cos(angle), centre[1] - r * math.sin(angle))
    span = max(end[0] - fork[0], 1.0)
    return [fork, (fork[0] + span * 0.3, end[1]), (end[0] - span * 0.4, end[1]), end]  # out of the fork, then level


def _path(points: list[Point]) -> str:
    """dot's B-spline control points as an SVG path of cubic Bezier segments."""
    start, rest = points[0], points[1:]
    segments = [f"M{start[0]:.1f},{start[1]:.1f}"]
    for i in range(0, len(rest) - 2, 3):
        (ax, ay), (bx, by), (cx, cy) = rest[i : i + 3]
        segments.append(f"C{ax:.1f},{ay:.1f} {bx:.1f},{by:.1f} {cx:.1f},{cy:.1f}")
    return " ".join(segments)


def _spline(pos: str) -> list[Point]:
    """dot's `pos` of an edge: its B-spline's control points (the arrowheads' end points left out)."""
    return [(float(x), float(y)) for x, y in (p.split(",")[:2] for p in pos.split() if not p.startswith(("e,", "s,")))]
