"""The space-time (Lamport) diagram of one traced run: one vertical line per node, time down.

Columns: the orchestrator, then every gate, grouped and labelled by the host it runs on. Rows:
the run's events in trace order (an order that respects happens-before), one row each, with
the event's Lamport number beside its dot; a receipt goes a row or a few lower where its arrow
would pass through another node's event or a fault's words on the way. An arrow per delivered
copy of a message, from its send to its receipt: forward values and feeds green and labelled
with the value, gradients and reports red and labelled with the gradient, probes and status
answers grey. A second copy (a duplicate) is drawn in its own colour; a delayed message is
visibly longer (its receipt comes rows later) and its sender shows the delay; a dropped one is
a dashed arrow ending in a cross; a host that is lost ends its gates' lines in a cross; a
timeout is marked. Every arrow has a <title> with the whole message, every element a class
(`msg forward`, `value`, `drop`).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

from gates.protocol import BROKER, ORCHESTRATOR
from gates.trace_records import (
    ENDED_EARLY,
    STEP_MODE_COPY_DROP,
    STEP_MODE_DROP,
    STEP_MODE_DUPLICATE,
    TraceEvent,
    loses_its_message,
)
from orchestrator.trace import Trace, as_sent, dumps_msg
from viz.circuit import symbol
from viz.svg import DUPLICATE, ERROR, GREEN, GREY, RED, DrawError, attr, captioned, document, num, text
from viz.wire_labels import Box, Point, Spots, beside, choose, crossings, overlaps, up_normal

COLUMN = 104.0
ROW = 22.0
LEFT, TOP, BOTTOM = 30.0, 92.0, 88.0
MAX_EVENTS = 5000
MAX_GATES = 40
"""Lines past which the diagram is refused (the page says so instead): at 40 gates a pass's
feeds already fan out across the picture; ShiViz shows any size."""
PLACED_ARROWS = 400
"""Up to this many arrows (a circuit of about 30 gates), each arrow's number looks for a clear place."""
DOT_CLEAR = 24
"""How far to each side of an event an arrow's number keeps off (more pays than a line in its
way): a number right beside another node's event reads as that node's message."""
CLEAR_ROWS = 0.3
"""An arrow passing a lifeline nearer than this to one of its events looks as if it touched it."""
MAX_GAPS = 3
"""Rows a receipt may go lower to keep its arrow clear of the events it passes."""
WORDED = frozenset({"drop", "duplicate", "delay", "reorder", "timeout", "host_lost"})
"""Events drawn with words right of their line."""
WORDS = (0.05, 0.55)
"""Where those words are, in columns right of their line."""

STYLE = f"""
.lifeline {{ stroke: #9ca3af; stroke-width: 1.2; }}
.host-box {{ fill: #f3f4f6; stroke: #d1d5db; }}
.host {{ font-size: 12px; font-weight: 600; fill: #374151; }}
.node {{ font-size: 12px; fill: #111827; }}
.event {{ fill: #111827; }}
.event.compute {{ fill: #9ca3af; }}
.lamport {{ font-size: 9px; fill: {GREY}; }}
.msg {{ stroke-width: 1.4; fill: none; }}
.msg.forward, .msg.feed {{ stroke: {GREEN}; }}
.msg.backward, .msg.report {{ stroke: {RED}; }}
.msg.probe, .msg.release, .msg.status {{ stroke: {GREY}; }}
.msg.error {{ stroke: {ERROR}; }}
.msg.duplicate {{ stroke: {DUPLICATE}; stroke-dasharray: 6 2; }}
.msg.drop {{ stroke-dasharray: 5 4; }}
.msg.undelivered {{ stroke-dasharray: 2 3; }}
.msg.unsent, .msg.unrecorded {{ stroke-dasharray: 8 3 2 3; }}
.msg.unsent.undelivered {{ stroke-dasharray: 2 3; }}
.value {{ font-size: 11px; fill: {GREEN}; font-weight: 600; }}
.grad {{ font-size: 11px; fill: {RED}; font-weight: 600; }}
.copy {{ font-size: 11px; fill: {DUPLICATE}; font-weight: 600; }}
.value, .grad, .copy, .fault, .note, .lamport {{ paint-order: stroke; stroke: white; stroke-width: 3px; }}
.fault {{ font-size: 10px; fill: {ERROR}; }}
.cross {{ stroke: {ERROR}; stroke-width: 2.2; }}
.lost {{ stroke: #b91c1c; stroke-width: 2.6; }}
.event.heard-lost {{ fill: white; stroke: #b91c1c; stroke-width: 2; }}
.timeout-box {{ fill: #fff7ed; fill-opacity: 0.6; stroke: {ERROR}; }}
.note {{ font-size: 10px; fill: #374151; }}
.caption {{ font-size: 13px; fill: #111827; }}
.legend {{ font-size: 11px; fill: {GREY}; }}
"""


@dataclass
class _Place:
    x: float
    y: float


@dataclass
class _Arrow:
    """A message's arrow, all but where its number goes (placed once every arrow is known)."""

    group: str
    """The opening <g> with its <title>, and the line with its marks."""
    label: str
    label_css: str
    a: _Place
    b: _Place
    fractions: tuple[float, ...]
    """Where along the line its number may go, best first."""
    at_end: bool = False
    """Its label goes just past its end, level with it, and nowhere else: a short stub's name
    (sender:lamport, as wide as two stubs are apart) above or below it read as its neighbour's."""

    def svg(self, at: Point) -> str:
        return f"{self.group}{text(at[0], at[1], self.label, self.label_css) if self.label else ''}</g>"


def draw_lamport(trace: Trace, run: str | None = None, *, caption: str = "", max_gates: int = MAX_GATES) -> str:
    """The diagram of `run` (the trace's last run by default) as a standalone SVG document."""
    chosen = trace.run_id(run)
    of_run = [e for e in trace.events if e.run == chosen]
    events = [e for e in of_run if e.node != BROKER]
    if not events:
        raise DrawError(f"run {chosen} has no events in this trace")
    if len(events) > MAX_EVENTS:
        raise DrawError(f"run {chosen} has {len(events)} events; the diagram stays readable up to {MAX_EVENTS}")
    if len(trace.circuit.gates) > max_gates:
        raise DrawError(
            f"{len(trace.circuit.gates)} gates: the diagram stays readable up to {max_gates} (a line each); "
            "`gatemesh export shiviz` writes the run for ShiViz, which shows any size (or raise the limit "
            "with --max-gates)"
        )
    columns, hosts = _columns(trace, events)
    rows = _rows(events, columns)
    where = {id(e): _Place(_x(columns[e.node]), TOP + ROW * row) for e, row in zip(events, rows, strict=True)}
    bottom = TOP + ROW * (rows[-1] + 2)
    lost_at = {g: where[id(e)].y for e in events if e.type == "host_lost" for g in e.gates or ()}
    body: list[str] = []
    labels = {g.id: g.id if g.op in ("input", "const") else f"{g.id} {symbol(g)}" for g in trace.circuit.gates}
    body += _heads(columns, hosts, lost_at, bottom, labels)
    crossed_at = _crossed_at(of_run, rows)
    record = next((r for r in trace.header.runs if r.run == chosen), None)
    going_on = record is not None and record.result is None and not record.error  # a step-mode pass, say
    arrows = _arrows(trace, chosen, events, where, columns, lost_at, bottom, crossed_at, going_on)
    arrows += _unsent(of_run, where, columns, crossed_at, lost_at, bottom)
    marks, covered = _dots(events, where, columns, [((a.a.x, a.a.y), (a.b.x, a.b.y)) for a in arrows])
    lifelines = [_x(column) for column in columns.values()]
    places = _label_places(arrows, covered, lifelines)
    body += [arrow.svg(at) for arrow, at in zip(arrows, places, strict=True)]
    body += marks
    body += _legend(bottom + 22, "no receipt yet" if going_on else "no receipt in the trace")
    width = max(LEFT * 2 + COLUMN * len(columns), 740)  # the legend's width at least
    needed, added, body = captioned(caption, LEFT, width, body)
    title = caption or f"run {chosen}"
    return document(max(width, needed), bottom + BOTTOM + added, STYLE, body, title, "lamport-diagram")


def _x(column: int) -> float:
    """Where column `column`'s line is drawn."""
    return LEFT + COLUMN * (column + 0.5)


def _columns(trace: Trace, events: list[TraceEvent]) -> tuple[dict[str, int], list[tuple[str, list[str]]]]:
    """node -> column, and the hosts in column order with their nodes (orchestrator first)."""
    placement = trace.placement()
    order = [g.id for g in trace.circuit.order]
    by_host: dict[str, list[str]] = defaultdict(list)
    for gate in order:
        by_host[placement[gate]].append(gate)
    hosts = [("orchestrator", [ORCHESTRATOR]), *sorted(by_host.items(), key=lambda kv: order.index(kv[1][0]))]
    seen = {node for _, nodes in hosts for node in nodes}
    strays = sorted({e.node for e in events} - seen)  # an event from a node the circuit does not name
    if strays:
        hosts.append(("unknown", strays))
    columns = {node: i for i, node in enumerate(node for _, nodes in hosts for node in nodes)}
    return columns, hosts


def _heads(
    columns: dict[str, int],
    hosts: list[tuple[str, list[str]]],
    lost_at: dict[str, float],
    bottom: float,
    labels: dict[str, str],
) -> list[str]:
    out = []
    for host, nodes in hosts:
        first, last = columns[nodes[0]], columns[nodes[-1]]
        x0, x1 = LEFT + COLUMN * first + 4, LEFT + COLUMN * (last + 1) - 4
        out.append(f'<rect class="host-box" x="{x0:.1f}" y="40" width="{x1 - x0:.1f}" height="22" rx="4"/>')
        out.append(text((x0 + x1) / 2, 55, host, "host"))
        for node in nodes:
            x = _x(columns[node])
            end = lost_at.get(node, bottom)
            out.append(text(x, 80, labels.get(node, node), "node"))
            out.append(f'<line class="lifeline" x1="{x:.1f}" y1="86" x2="{x:.1f}" y2="{end:.1f}"/>')
            if node in lost_at:
                out.append(_cross(x, end, "lost", 7))
    return out


def _arrows(
    trace: Trace,
    run: str,
    events: list[TraceEvent],
    where: dict[int, _Place],
    columns: dict[str, int],
    lost_at: dict[str, float],
    bottom: float,
    crossed_at: dict[str, float],
    going_on: bool,
) -> list[_Arrow]:
    sends = {e.msg.id: e for e in events if e.type == "send" and e.msg is not None}
    receipts: dict[str, list[TraceEvent]] = defaultdict(list)
    faults: dict[tuple[str, str], TraceEvent] = {}
    for e in events:
        if e.msg is None:
            continue
        if e.type == "receive":
            receipts[e.msg.id].append(e)
        elif e.type in ("duplicate", "delay") or loses_its_message(e):
            faults.setdefault((e.type, e.msg.id), e)
    copies = _copies(events)
    shown_received = trace.shown_received(run)
    out: list[_Arrow] = []
    for msg_id, send in sends.items():
        assert send.msg is not None
        start = where[id(send)]
        delayed = ("delay", msg_id) in faults
        shown = as_sent(trace, send)  # what crossed the broker, for the hover text
        seen: set[str] = set()
        fanned = len(out)
        for receipt in receipts.get(msg_id, []):
            copy = receipt.node in seen
            seen.add(receipt.node)
            out.append(_arrow(send, shown, start, where[id(receipt)], receipt, copy=copy, delayed=delayed))
        _one_word(out, fanned)
        dropped = faults.get(("drop", msg_id))
        waiting: dict[int, list[str]] = defaultdict(list)
        """Readers still waiting for it in a run going on, by the side they are on."""
        for node in send.msg.dest:
            if node in seen or node not in columns:
                continue
            x = _x(columns[node])
            proof = shown_received.get((msg_id, node))
            if dropped is not None:
                out.append(_dropped(send, shown, start, x, where[id(dropped)], dropped.note))
            elif delayed and send.node in lost_at and msg_id not in crossed_at:  # held back when its host died
                out.append(_lost_with_sender(send, shown, start, x, lost_at[send.node]))
            elif proof is not None and proof.msg is not None and proof.msg.id in crossed_at:
                got = _Place(x, max(crossed_at[proof.msg.id] - ROW / 2, start.y + ROW / 2))
                out.append(_received_unrecorded(send, shown, start, got, node, proof))
            elif going_on and node not in lost_at:
                waiting[1 if x > start.x else -1].append(node)
            else:
                end = lost_at.get(node, bottom - ROW / 2)
                end = end if end > start.y else start.y + ROW  # sent after its receiver was gone
                out.append(_undelivered(send, shown, start, _Place(x, end), node in lost_at, going_on))
        received = Counter(receipt.node for receipt in receipts.get(msg_id, []))
        owed: dict[int, list[str]] = defaultdict(list)
        """Readers that got a copy, not yet every copy a duplicate made, in a run going on."""
        for node in send.msg.dest:
            if not 0 < received[node] < copies.get(msg_id, 1) or node not in columns:
                continue
            x = _x(columns[node])
            if going_on and node not in lost_at:
                owed[1 if x > start.x else -1].append(node)
            else:
                end = lost_at.get(node, bottom - ROW / 2)
                end = end if end > start.y else start.y + ROW
                out.append(_undelivered(send, shown, start, _Place(x, end), node in lost_at, going_on, copy=True))
        out += [_on_its_way(send, shown, start, toward, readers) for toward, readers in waiting.items()]
        out += [_on_its_way(send, shown, start, toward, readers, copy=True) for toward, readers in owed.items()]
    return out


def _copies(events: list[TraceEvent]) -> dict[str, int]:
    """By message id, the copies made of it, where a duplicate made more than one: each
    duplicate adds one (the fault injector's and a student's alike, as the recorder's tally
    counts them), a student's drop of a second copy takes one away (it may come first: a
    duplicate is told on its PUBACK)."""
    found: dict[str, int] = {}
    for e in events:
        if e.msg is None:
            continue
        if e.type == "duplicate":
            found[e.msg.id] = found.get(e.msg.id, 1) + 1
        elif e.type == "drop" and not loses_its_message(e):
            found[e.msg.id] = found.get(e.msg.id, 1) - 1
    return found


def _one_word(arrows: list[_Arrow], first: int) -> None:
    """A probe or a release reaches every gate: its word goes on its longest arrow only (five
    "release"s fanned out from one point pile up where the arrows start)."""
    fan = arrows[first:]
    if len(fan) > 1 and all(arrow.label_css == "note" for arrow in fan):
        longest = max(range(len(fan)), key=lambda i: abs(fan[i].b.x - fan[i].a.x))
        for i, arrow in enumerate(fan):
            if i != longest:
                arrows[first + i] = replace(arrow, label="")


def _rows(events: list[TraceEvent], columns: dict[str, int]) -> list[int]:
    """Each event's row: one after the other, from row 1, except that a receipt goes a row or
    a few lower when its arrow would otherwise cross a lifeline right at one of that node's
    events (and so look as if it came from there or went there) or run through a fault's words.
    One pass, in trace order: an event's row depends only on the events before it, so a diagram
    that grows keeps its rows."""
    sent_at: dict[str, int] = {}
    rows: list[int] = []
    marks: dict[int, list[int]] = defaultdict(list)
    """By column, the rows of its events so far (ascending)."""
    words: dict[int, list[int]] = defaultdict(list)
    """By column, the rows of its events with words beside them (a fault, a timeout, a lost host)."""
    for e in events:
        row = rows[-1] + 1 if rows else 1
        send = sent_at.get(e.msg.id) if e.msg is not None and e.type == "receive" else None
        if send is not None:
            a, b = columns[events[send].node], columns[e.node]
            row = max(
                range(row, row + MAX_GAPS + 1),
                key=lambda r: (*_clearance(rows[send], a, r, b, marks, words), -r),  # a mark matters most
            )
        elif e.msg is not None and e.type == "send":
            sent_at.setdefault(e.msg.id, len(rows))
        rows.append(row)
        marks[columns[e.node]].append(row)
        if e.type in WORDED:
            words[columns[e.node]].append(row)
            if e.type == "host_lost":  # its words go below the lost gates' crosses, into the next row
                words[columns[e.node]].append(row + 1)
    return rows


def _clearance(
    start: int, a: int, end: int, b: int, marks: dict[int, list[int]], words: dict[int, list[int]]
) -> tuple[float, float]:
    """How near (in rows, at most CLEAR_ROWS) an arrow from row `start` of column `a` to row
    `end` of column `b` passes to an event of a column between them, and to the words beside one."""

    def near(left: float, right: float, rows: list[int]) -> float:
        """The nearest of `rows` to the arrow where it runs from column `left` to `right`."""
        ys = [start + (end - start) * (column - a) / (b - a) for column in (left, right)]
        low, high = min(ys), max(ys)
        at = bisect.bisect_left(rows, low - CLEAR_ROWS)
        found = rows[at : bisect.bisect_right(rows, high + CLEAR_ROWS)]
        return min((max(low - row, row - high, 0.0) for row in found), default=CLEAR_ROWS)

    to_mark = to_words = CLEAR_ROWS
    for column in range(min(a, b), max(a, b)):
        if column != min(a, b):
            to_mark = min(to_mark, near(column, column, marks.get(column, [])))
        if column != a:  # words sit right of their line: the sender's own are left behind at once
            to_words = min(to_words, near(column + WORDS[0], column + WORDS[1], words.get(column, [])))
    return to_mark, to_words


def _crossed_at(of_run: list[TraceEvent], rows: list[int]) -> dict[str, float]:
    """By message id, the height at which the broker passed it on: between the rows of the
    events the trace has before and after its crossing."""
    found: dict[str, float] = {}
    before = 0
    for e in of_run:
        if e.node != BROKER:
            before += 1
        elif e.msg is not None:
            above = rows[before - 1] if before else rows[0] - 1
            below = rows[before] if before < len(rows) else above + 1
            found.setdefault(e.msg.id, TOP + ROW * (above + below) / 2)
    return found


def _unsent(
    of_run: list[TraceEvent],
    where: dict[int, _Place],
    columns: dict[str, int],
    crossed_at: dict[str, float],
    lost_at: dict[str, float],
    bottom: float,
) -> list[_Arrow]:
    """Arrows of messages that crossed the broker but whose send the trace lacks (its sender's
    host was lost with the events it had not sent yet): drawn from where they crossed, to each
    receipt, or, for a reader with none, as an undelivered message is."""
    events = [e for e in of_run if e.node != BROKER]
    sent = {e.msg.id for e in events if e.type == "send" and e.msg is not None}
    received: set[tuple[str, str]] = set()
    out = []
    for receipt in events:
        m = receipt.msg
        if receipt.type != "receive" or m is None or m.id in sent or m.id not in crossed_at or m.src not in lost_at:
            continue
        received.add((m.id, receipt.node))
        a = _Place(_x(columns[m.src]), crossed_at[m.id])
        hover = (
            f"{dumps_msg(receipt)}\nits send is not in the trace ({m.src}'s events were lost): drawn from "
            f"where it crossed the broker\nreceived by {receipt.node} at lamport {receipt.lamport} {_vc(receipt)}"
        )
        out.append(_drawn(receipt, "unsent", f"msg {m.phase} unsent", m.phase, a, where[id(receipt)], hover))
    for crossing in of_run:
        m = crossing.msg
        if crossing.type != "cross" or m is None or m.id in sent or m.src not in lost_at or m.src not in columns:
            continue
        a = _Place(_x(columns[m.src]), crossed_at[m.id])
        for node in m.dest:
            if (m.id, node) in received or node not in columns:
                continue
            received.add((m.id, node))  # a second crossing (a duplicate) is not drawn again
            end = lost_at.get(node, bottom - ROW / 2)
            b = _Place(_x(columns[node]), end if end > a.y else a.y + ROW)
            lost_too = ": its receiver's host was lost too" if node in lost_at else ""
            hover = (
                f"{dumps_msg(crossing)}\nits send is not in the trace ({m.src}'s events were lost): drawn from "
                f"where it crossed the broker\nno receipt by {node} in the trace{lost_too}"
            )
            out.append(_drawn(crossing, "unsent", f"msg {m.phase} unsent undelivered", "", a, b, hover))
    return out


def _label(send: TraceEvent) -> tuple[str, str]:
    assert send.msg is not None
    m = send.msg
    if m.value is not None and m.phase in ("feed", "forward"):
        return num(m.value), "value"
    if m.grad is not None:
        return num(m.grad), "grad"
    if m.phase == "status":  # its words stand beside the gate's event that sent it (_dots): unambiguous
        return "", "note"
    if m.phase == "error":  # its code, a word as short as a number: the reason is in the hover
        return f"error: {m.note.partition(':')[0].replace('_', ' ')}" if m.note else "error", "note"
    if m.phase in ("feed", "forward"):  # its number not read (it never crossed, or not yet): its name, as
        return m.id, "value"  # the page's list of waiting messages names it; the note is in the hover
    if m.phase in ("backward", "report"):
        return m.id, "grad"
    return (m.note or m.phase), "note"


def _arrow(
    send: TraceEvent, shown: str, a: _Place, b: _Place, receipt: TraceEvent, *, copy: bool, delayed: bool
) -> _Arrow:
    assert send.msg is not None
    phase = send.msg.phase
    css = f"msg {phase}" + (" duplicate" if copy else "") + (" delayed" if delayed else "")
    hover = (
        f"{shown}\nsent by {send.node} at lamport {send.lamport} {_vc(send)}\n"
        f"received by {receipt.node} at lamport {receipt.lamport} {_vc(receipt)}"
        + (" (a duplicate copy)" if copy else "")
    )
    return _drawn(send, "", css, "dup" if copy else phase, a, b, hover)


def _drawn(event: TraceEvent, kind: str, css: str, marker: str, a: _Place, b: _Place, hover: str) -> _Arrow:
    """An arrow from `a` to `b` for the message of `event`: its group (class `arrow [kind]
    phase`), its line (class `css`, head `marker`, none for ""), its hover text and its number."""
    assert event.msg is not None
    label, label_css = _label(event)
    group = " ".join(filter(None, ("arrow", kind, event.msg.phase)))
    head = f' marker-end="url(#head-{marker})"' if marker else ""
    return _Arrow(
        f"<g class={attr(group)}><title>{escape(hover)}</title>"
        f'<line class={attr(css)} x1="{a.x:.1f}" y1="{a.y:.1f}" x2="{b.x:.1f}" y2="{b.y:.1f}"{head}/>',
        label,
        label_css,
        a,
        b,
        _fractions(a, b),
    )


def _fractions(a: _Place, b: _Place) -> tuple[float, ...]:
    """Where along an arrow its number may go, best first: half a column before its head,
    between two lifelines (at the middle of a long arrow, the numbers of the messages a node
    sends at once pile up), then further back, then the middle."""
    dx = abs(b.x - a.x)
    first = 1 - COLUMN / 2 / dx if dx > COLUMN else 0.5
    tried = (first, first - 0.15, first + 0.12, first - 0.3, 0.5, 0.35, 0.65, 0.25, 0.75)
    return tuple(dict.fromkeys(round(min(max(t, 0.1), 0.9), 3) for t in tried))


def _label_places(arrows: list[_Arrow], covered: list[Box], lifelines: list[float]) -> list[Point]:
    """Each arrow's number: where along its line it runs into least of the marks (`covered`),
    the lifelines (a number between two of them, not on one), the other arrows and the numbers
    placed before it, in the order the messages were sent (a diagram that grows mostly keeps its
    numbers: only a later mark or line in the way moves one). Past the first PLACED_ARROWS, each
    simply takes its first place: the search grows with the diagram, drawn again as a pass grows."""
    candidates: list[list[Spots]] = [
        [[_past_end(arrow)]]
        if arrow.label and arrow.at_end
        else [[_label_spot(arrow, t, side)] for side in (1.0, -1.0) for t in arrow.fractions]
        if arrow.label
        else [[]]
        for arrow in arrows
    ]
    placed = arrows[:PLACED_ARROWS]
    lines = [((arrow.a.x, arrow.a.y), (arrow.b.x, arrow.b.y)) for arrow in placed]
    chosen = choose(candidates[:PLACED_ARROWS], covered, lines, rounds=1, verticals=lifelines, own_lines=True)
    chosen += [0] * (len(arrows) - len(placed))
    return [spots[0][1] if (spots := candidates[i][k]) else (0.0, 0.0) for i, k in enumerate(chosen)]


def _label_spot(arrow: _Arrow, t: float, side: float) -> tuple[Box, Point]:
    """An arrow's number `t` of the way along its line, above it (side 1; below: -1, where
    every place above runs into something) and clear of it at its slope (just above a sloping
    line, the line's end beside the number read as a minus sign)."""
    (ax, ay), (bx, by) = (arrow.a.x, arrow.a.y), (arrow.b.x, arrow.b.y)
    normal = up_normal((ax, ay), (bx, by))
    return beside((ax + (bx - ax) * t, ay + (by - ay) * t), normal, side, len(arrow.label) * 6.4 + 4)


def _past_end(arrow: _Arrow) -> tuple[Box, Point]:
    """An arrow's label just past its end, level with it, reading away from its sender."""
    width = len(arrow.label) * 6.4 + 4
    toward = 1.0 if arrow.b.x >= arrow.a.x else -1.0
    x, y = arrow.b.x + toward * (width / 2 + 3), arrow.b.y + 4
    return (x - width / 2, y - 9.5, x + width / 2, y + 1), (x, y)


def _dropped(send: TraceEvent, shown: str, a: _Place, dest_x: float, fault: _Place, note: str) -> _Arrow:
    toward = 1 if dest_x > a.x else -1  # it ends half a column short of its receiver, between two lines
    end = _Place(dest_x - toward * COLUMN / 2, max(fault.y, a.y) + ROW * 1.5)
    by = "by you, in step mode" if note == STEP_MODE_DROP else "by the fault injector"
    hover = f"{shown}\nsent by {send.node} at lamport {send.lamport}; dropped {by}"
    return _crossed_out(send, "dropped", a, end, hover)


def _lost_with_sender(send: TraceEvent, shown: str, a: _Place, dest_x: float, lost_y: float) -> _Arrow:
    """A message its gate sent, but that never crossed the broker: the gate's fault injector still
    held it (a delay) when the gate's host was lost. Drawn as a drop is, but ending near its own
    line (it never left the host), at the height of the loss."""
    toward = 1 if dest_x > a.x else -1
    end = _Place(a.x + toward * COLUMN * 0.4, max(lost_y, a.y + ROW))
    hover = (
        f"{shown}\nsent by {send.node} at lamport {send.lamport}; it never crossed the broker: "
        f"{send.node}'s host was lost while it held the message back"
    )
    return _crossed_out(send, "lost-with-host", a, end, hover)


def _crossed_out(send: TraceEvent, kind: str, a: _Place, end: _Place, hover: str) -> _Arrow:
    """A message that never reached its reader: a dashed arrow from its send that ends in a cross."""
    assert send.msg is not None
    label, label_css = _label(send)
    return _Arrow(
        f'<g class="arrow {kind}"><title>{escape(hover)}</title>'
        f'<line class={attr(f"msg {send.msg.phase} drop")} x1="{a.x:.1f}" y1="{a.y:.1f}" '
        f'x2="{end.x:.1f}" y2="{end.y:.1f}"/>{_cross(end.x, end.y, "cross drop-mark", 5)}',
        label,
        label_css,
        a,
        end,
        (0.5, 0.35, 0.65, 0.25, 0.75),
    )


def _received_unrecorded(send: TraceEvent, shown: str, a: _Place, b: _Place, node: str, proof: TraceEvent) -> _Arrow:
    """A message its receiver got, though the receipt went with the receiver's host: the
    receiver's own next message, which crossed the broker, shows it."""
    assert send.msg is not None
    assert proof.msg is not None
    phase = send.msg.phase
    hover = (
        f"{shown}\nsent by {send.node} at lamport {send.lamport}; its receipt is not in the trace ({node}'s "
        f"host was lost), but {node} received it: its {proof.msg.phase} message {proof.msg.id} crossed the broker "
        "after it, and a gate sends that only once all it waits for has come"
    )
    return _drawn(send, "unrecorded", f"msg {phase} unrecorded", phase, a, b, hover)


def _on_its_way(
    send: TraceEvent, shown: str, a: _Place, toward: int, readers: list[str], *, copy: bool = False
) -> _Arrow:
    """A message of a run going on that its readers (all on one side) have not received yet: a
    short arrow out of its send, toward them, that ends before the next line (drawn to where they
    are, it ran through the events of every line between), labelled with its id (sender:lamport),
    as the page's list of waiting messages names it, in its phase's colour (`copy`: a second
    copy a duplicate left waiting, "sender:lamport copy" in a duplicate's colour). (Its number may not be known yet: a
    gate's held message has not crossed the broker, which is where it is read.)"""
    assert send.msg is not None
    b = _Place(a.x + toward * COLUMN * 0.55, a.y + ROW * 0.9)
    phase = send.msg.phase
    css = "value" if phase in ("feed", "forward") else "grad" if phase in ("backward", "report") else "note"
    what = "a duplicate's second copy is not" if copy else "not"
    why = f"{what} delivered yet to {', '.join(readers)}: the run goes on (in step mode it waits for you)"
    hover = f"{shown}\nsent by {send.node} at lamport {send.lamport}; {why}"
    line = f"msg {send.msg.phase} undelivered" + (" duplicate" if copy else "")
    return _Arrow(
        f'<g class="arrow undelivered"><title>{escape(hover)}</title>'
        f'<line class={attr(line)} x1="{a.x:.1f}" y1="{a.y:.1f}" '
        f'x2="{b.x:.1f}" y2="{b.y:.1f}"/>',
        send.msg.id + (" copy" if copy else ""),
        "copy" if copy else css,
        a,
        b,
        (),
        at_end=True,
    )


def _undelivered(
    send: TraceEvent, shown: str, a: _Place, b: _Place, lost: bool, going_on: bool, *, copy: bool = False
) -> _Arrow:
    """A message its reader has no receipt of (`copy`: of a duplicate's second copy): lost with
    the reader's host, not delivered yet (a run going on: in step mode it waits for the student),
    or neither, as far as the trace knows."""
    assert send.msg is not None
    if lost:
        why = "no receipt in the trace: its receiver's host was lost, with the events it had not sent"
    elif going_on:
        why = "not delivered yet: the run goes on (in step mode it waits for you)"
    else:
        why = "no receipt in the trace"
    if copy:
        why = f"a duplicate's second copy: {why}"
    hover = f"{shown}\nsent by {send.node} at lamport {send.lamport}; {why}"
    line = f"msg {send.msg.phase} undelivered" + (" duplicate" if copy else "")
    return _Arrow(
        f'<g class="arrow undelivered"><title>{escape(hover)}</title>'
        f'<line class={attr(line)} x1="{a.x:.1f}" y1="{a.y:.1f}" '
        f'x2="{b.x:.1f}" y2="{b.y:.1f}"/>',
        "",
        "",
        a,
        b,
        (),
    )


def _dots(
    events: list[TraceEvent], where: dict[int, _Place], columns: dict[str, int], lines: list[tuple[Point, Point]]
) -> tuple[list[str], list[Box]]:
    """Each event's mark and Lamport number, and what they cover (an arrow's number keeps off).
    A fault's words go on the side of its line that fewer arrows (`lines`) cross."""
    sent_from = {e.msg.id: e.node for e in events if e.type == "send" and e.msg is not None}
    out: list[str] = []
    covered: list[Box] = []
    numbers = [_lamport(e, where[id(e)], columns, sent_from) for e in events]
    taken = [box for _, box in numbers]  # a fault's words keep off every event's number
    for e, (number, number_box) in zip(events, numbers, strict=True):
        p = where[id(e)]
        out.append(number)
        covered += [number_box, (p.x - DOT_CLEAR, p.y - 4, p.x + DOT_CLEAR, p.y + 4)]
        match e.type:
            case "send" | "receive":
                extra = " duplicate" if e.note == "duplicate" else ""
                out.append(
                    f'<circle class={attr(f"event {e.type}{extra}")} cx="{p.x:.1f}" cy="{p.y:.1f}" r="3">'
                    f"<title>{escape(_describe(e))}</title></circle>"
                )
                if e.type == "send" and e.msg is not None and e.msg.phase == "status" and e.msg.note:
                    # a probe's answer: where the run stands at this gate, said at the gate (on the
                    # arrow, the answers converging on the orchestrator read as each other's)
                    below = _Place(p.x, p.y + 6)  # clear of its Lamport number, above the dot on that side
                    words_at, box = _words_beside(below, e.msg.note, 6, lines, taken, "note status-word")
                    out.append(words_at)
                    covered.append(box)
            case "compute":
                out.append(
                    f'<rect class="event compute" x="{p.x - 3:.1f}" y="{p.y - 3:.1f}" width="6" height="6">'
                    f"<title>{escape(_describe(e))}</title></rect>"
                )
            case "drop" | "duplicate" | "delay" | "reorder":
                copies = e.note or "2 copies"  # the injector's note says how many (not "dup x2": two more?)
                # a student's drop or duplicate is the orchestrator's event (no gate hears of it): said as theirs
                drop = {STEP_MODE_DROP: "you drop", STEP_MODE_COPY_DROP: "you drop copy 2"}.get(e.note, "drop")
                copies = "you duplicate" if e.note == STEP_MODE_DUPLICATE else copies
                words = {"drop": drop, "duplicate": copies, "reorder": "reorder"}
                word = f"+{e.delay_ms:.1f} ms" if e.type == "delay" and e.delay_ms is not None else words[e.type]
                words_at, box = _words_beside(p, word, 7, lines, taken)
                out.append(
                    f"<g class={attr(f'fault {e.type}')}><title>{escape(_describe(e))}</title>"
                    f'<path class="cross" d="M{p.x - 3:.1f},{p.y:.1f} L{p.x:.1f},{p.y - 3:.1f} '
                    f'L{p.x + 3:.1f},{p.y:.1f} L{p.x:.1f},{p.y + 3:.1f} Z"/>{words_at}</g>'
                )
                covered.append(box)
            case "timeout":
                word = "stops waiting" if e.note.startswith(ENDED_EARLY) else "timeout"  # a stepped run, stuck
                width = max(60.0, 12 + 6.0 * len(word))
                out.append(
                    f'<g class="timeout"><title>{escape(_describe(e))}</title>'
                    f'<rect class="timeout-box" x="{p.x + 4:.1f}" y="{p.y - 8:.1f}" width="{width:g}" height="16" '
                    'rx="3"/>'
                    f"{text(p.x + 4 + width / 2, p.y + 4, word, 'fault')}</g>"
                )
                covered.append((p.x + 4, p.y - 8, p.x + 4 + width, p.y + 8))
            case "host_lost":
                # what the orchestrator heard: a mark of its own (a cross on its line read as the
                # orchestrator dying), its words below the lost gates' crosses on its row (7 px down)
                words_at, box = _words_beside(_Place(p.x, p.y + 15), e.note, 9, lines, taken)
                out.append(
                    f'<g class="host-lost"><title>{escape(_describe(e))}</title>'
                    f'<circle class="event heard-lost" cx="{p.x:.1f}" cy="{p.y:.1f}" r="4"/>{words_at}</g>'
                )
                covered.append(box)
    return out, covered


def _words_beside(
    p: _Place, words: str, gap: float, lines: list[tuple[Point, Point]], numbers: list[Box], css: str = "fault"
) -> tuple[str, Box]:
    """`words` right of an event's mark, or left of it (a little lower: the event's Lamport number
    sits above on the left) if there they cross fewer arrows and cover fewer Lamport numbers
    and fit in the picture: their <text> and their box (with the descenders of a 10 px font).
    A number covered is worse than an arrow crossed: the words' white halo keeps them readable
    over an arrow, but a number under words is lost."""
    width = 5.5 * len(words) + 2
    right = (p.x + gap - 1, p.y - 6, p.x + gap + width, p.y + 6)
    left = (p.x - gap - width, p.y - 3, p.x - gap + 1, p.y + 9)

    def cost(box: Box) -> int:
        return crossings(box, lines) + 3 * overlaps(box, numbers)

    if left[0] >= 2 and cost(left) < cost(right):
        return text(p.x - gap, p.y + 6, words, css, anchor="end"), left
    return text(p.x + gap, p.y + 3, words, css, anchor="start"), right


def _lamport(e: TraceEvent, p: _Place, columns: dict[str, int], sent_from: dict[str, str]) -> tuple[str, Box]:
    """The event's Lamport number, on the side of its line that its arrow does not use, and its box."""
    here = columns.get(e.node, 0)
    if e.type == "receive" and e.msg is not None:
        there = columns.get(sent_from.get(e.msg.id, e.msg.src), here)
    elif e.type == "send" and e.msg is not None and e.msg.dest:
        there = columns.get(e.msg.dest[0], here)
    else:
        there = here + 1
    left = there > here or (there == here and here > 0)
    x, anchor = (p.x - 6, "end") if left else (p.x + 6, "start")
    width = 5.2 * len(str(e.lamport))
    box = (x - width, p.y - 10, x, p.y - 3) if left else (x, p.y - 10, x + width, p.y - 3)
    return text(x, p.y - 3, str(e.lamport), "lamport", anchor=anchor), box


def _describe(e: TraceEvent) -> str:
    """An event's hover text: what, where, both clocks."""
    what = e.type + (f" {e.msg.phase} {e.msg.id}" if e.msg else "")
    extra = []
    if e.inputs is not None:
        extra.append(f"inputs {[num(v) for v in e.inputs]} -> {num(e.value)}")
    elif e.value is not None:
        extra.append(f"value {num(e.value)}")
    if e.grad is not None:
        extra.append(f"gradient {num(e.grad)}" + (f", sends {[num(g) for g in e.grads_out]}" if e.grads_out else ""))
    if e.note:
        extra.append(e.note)
    return f"{what} at {e.node} ({e.host}); lamport {e.lamport}, vc {_vc(e)}" + "".join(f"; {x}" for x in extra)


def _vc(e: TraceEvent) -> str:
    """An event's vector clock as the trace file and ShiViz write it (JSON), not as Python prints a dict."""
    return json.dumps(e.vc, separators=(",", ":"))


def _cross(x: float, y: float, css: str, size: float, colour: str = "") -> str:
    """A cross of class `css`, or (the legend's, which tests must not count) of `colour`."""
    paint = f' stroke="{colour}" stroke-width="2.2"' if colour else ""
    return (
        f'<path class={attr(css)} d="M{x - size:.1f},{y - size:.1f} L{x + size:.1f},{y + size:.1f} '
        f'M{x - size:.1f},{y + size:.1f} L{x + size:.1f},{y - size:.1f}"{paint}/>'
    )


def _legend(y: float, undelivered: str) -> list[str]:
    """The key; `undelivered`: what a dotted arrow means (a run over, or one going on)."""
    heads = "".join(
        f'<marker id="head-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        for name, colour in (
            ("feed", GREEN),
            ("forward", GREEN),
            ("backward", RED),
            ("report", RED),
            ("probe", GREY),
            ("release", GREY),
            ("status", GREY),
            ("error", ERROR),
            ("dup", DUPLICATE),
        )
    )
    keys = [
        ("value-key", GREEN, "forward value / feed"),
        ("grad-key", RED, "gradient / report"),
        ("dup-key", DUPLICATE, "duplicate copy"),
        ("control-key", GREY, "probe, status, release"),
    ]
    out = [f"<defs>{heads}</defs>"]
    x = LEFT
    for css, colour, words in keys:
        out.append(_swatch(x, y, colour))
        out.append(text(x + 27, y, words, f"legend {css}", anchor="start"))
        x += 40 + 5.6 * len(words)
    # what went wrong, and the rest: drawn here without the classes the diagram's own marks
    # have (tests count those)
    y += 18
    out += _key(LEFT, y, _cross(LEFT + 6, y - 4, "key", 4, ERROR), "dropped")
    out += _key(LEFT + 90, y, _swatch(LEFT + 90, y, GREEN, "2 3"), undelivered)
    out += _key(LEFT + 260, y, _cross(LEFT + 266, y - 4, "key", 4, "#b91c1c"), "host lost")
    out += _key(LEFT + 350, y, _swatch(LEFT + 350, y, ERROR), "error report")
    out += _key(LEFT + 460, y, _swatch(LEFT + 460, y, GREEN, "8 3 2 3"), "send or receipt lost with its host")
    y += 18
    diamond = f'<text x="{LEFT + 4:.1f}" y="{y:.1f}" fill="{ERROR}" font-size="11">\u25c6</text>'
    out += _key(LEFT, y, diamond, "fault injected (drop, dup, delay, reorder)")
    square = f'<rect x="{LEFT + 273:.1f}" y="{y - 7:.1f}" width="6" height="6" fill="#9ca3af"/>'
    out += _key(LEFT + 270, y, square, "compute")
    out.append(text(LEFT + 360, y, "small numbers: Lamport clock", "legend", anchor="start"))
    heard = f'<circle cx="{LEFT + 575:.1f}" cy="{y - 4:.1f}" r="4" fill="white" stroke="#b91c1c" stroke-width="2"/>'
    out += _key(LEFT + 570, y, heard, "host lost (as heard)")
    return out


def _key(x: float, y: float, mark: str, words: str) -> list[str]:
    return [mark, text(x + 27, y, words, "legend", anchor="start")]


def _swatch(x: float, y: float, colour: str, dashes: str = "") -> str:
    dash = f' stroke-dasharray="{dashes}"' if dashes else ""
    return f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 22:.1f}" y2="{y - 4:.1f}" stroke="{colour}"{dash}/>'
