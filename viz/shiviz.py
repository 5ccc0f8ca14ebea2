"""Traces as a ShiViz log (DistributedClocks/shiviz): a file its "Choose File" opens as it is.

    (?<host>\\S*) (?<clock>{.*})\\n(?<event>.*)        the parsing regex (ShiViz adds ^ and $)
    === (?<trace>.*) ===                             the multiple-executions delimiter
    === qf.jsonl run 9c1f04e2a7b3d615 ===
    orchestrator {"orchestrator":1}
    send feed orchestrator:1 value=-2 to x
    x {"orchestrator":1,"x":1}
    receive feed orchestrator:1 value=-2 from orchestrator
    ...

One block per run. A ShiViz host is a node (a gate or the orchestrator); broker crossings are
not events of any node and are left out. Before anything is written, every rule ShiViz checks
when it builds its graph (js/model/modelGraph.js) is checked here, and a trace that breaks one
fails with a message that names the event: each host appears in its own clock; each host's
own entry counts 1, 2, 3, ... over its events; every other entry names a host of the block
and one of that host's events; and each clock is exactly the merge of its host's previous
clock and the clocks of the events it newly learned of (no clock claims more than it heard).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from gates.protocol import BROKER
from gates.trace_records import STEP_MODE_COPY_DROP, STEP_MODE_DROP, STEP_MODE_DUPLICATE, TraceEvent
from orchestrator.trace import Trace
from viz.svg import DrawError, num

PARSER = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)"
DELIMITER = r"=== (?<trace>.*) ==="


def event_text(e: TraceEvent) -> str:
    """One line that says what happened; drops and duplicates are spelled out in capitals."""
    m = e.msg
    if m is None:
        detail = {
            "compute": _compute(e),
            "timeout": f"TIMEOUT: {e.note}",
            "host_lost": f"HOST LOST: {e.note}; gates {', '.join(e.gates or ())}",
            "reorder": f"REORDERED: sent in the order {', '.join(e.order or ())}",
        }
        return detail.get(e.type, e.type)
    number = f" value={m.value:.10g}" if m.value is not None else f" grad={m.grad:.10g}" if m.grad is not None else ""
    what = f"{m.phase} {m.id}{number}" + (f" ({m.note})" if m.note and e.type in ("send", "receive") else "")
    match e.type:
        case "send":
            return f"send {what} to {', '.join(m.dest) or '?'}"
        case "receive":
            copy = " DUPLICATE copy" if e.note == "duplicate" else ""
            return f"receive {what} from {m.src}{copy}"
        case "drop" if e.note == STEP_MODE_COPY_DROP:
            return f"DROPPED the second copy of {what} (in step mode: the first was delivered)"
        case "drop":
            return f"DROPPED {what} ({'in step mode' if e.note == STEP_MODE_DROP else 'fault injector'})"
        case "duplicate" if e.note == STEP_MODE_DUPLICATE:
            return f"DUPLICATED {what} (in step mode: one copy delivered, the second waits)"
        case "duplicate":
            return f"DUPLICATED {what}: {e.note} (fault injector)"
        case "delay":
            copy = f", {e.note}" if e.note else ""  # which copy, of a duplicated message
            return f"DELAYED {what} by {e.delay_ms or 0:.1f} ms{copy} (fault injector)"
    return f"{e.type} {what}"


def _compute(e: TraceEvent) -> str:
    if e.inputs is not None:
        args = ", ".join(num(v) for v in e.inputs)
        return f"compute forward ({args}) -> {num(e.value)}"
    sent = ", ".join(num(g) for g in e.grads_out or ())
    return f"compute backward total grad {num(e.grad)}" + (f" -> sends {sent}" if sent else "")


def block(events: Sequence[TraceEvent], label: str) -> list[str]:
    """One execution: its delimiter line, then two lines per event (host and clock, then text)."""
    kept = [e for e in events if e.node != BROKER]
    check(kept, label)
    lines = [f"=== {label} ==="]
    for e in kept:
        lines.append(f"{e.node} {json.dumps(e.vc, separators=(',', ':'))}")
        lines.append(event_text(e).replace("\n", " "))
    return lines


def export(traces: Iterable[tuple[str, Trace]]) -> str:
    """The ShiViz file for every run of every (name, trace): one block each, checked first."""
    lines = [PARSER, DELIMITER]
    labels: set[str] = set()
    for name, trace in traces:
        for run in trace.runs():
            events = trace.of_run(run)
            if not events:
                continue
            label = f"{name} run {run}"
            if label in labels:
                raise DrawError(f"{label} appears twice: ShiViz needs every execution's name to be unique")
            labels.add(label)
            lines += block(events, label)
    if len(lines) == 2:
        raise DrawError("the traces hold no events to export")
    return "\n".join(lines) + "\n"


def check(events: Sequence[TraceEvent], label: str) -> None:
    """Raise DrawError naming the first event that ShiViz would reject (see the module docstring)."""
    per_host: dict[str, list[TraceEvent]] = {}
    for e in events:
        if e.vc.get(e.node) is None:
            raise DrawError(f"{label}: event {e.seq} ({e.type} at {e.node}): its host is missing from its clock {e.vc}")
        per_host.setdefault(e.node, []).append(e)
    for host, mine in per_host.items():
        mine.sort(key=lambda e: e.vc[host])
        for count, e in enumerate(mine, 1):
            if e.vc[host] != count:
                where = "must start at 1" if count == 1 else f"jumps from {count - 1} to {e.vc[host]}"
                raise DrawError(
                    f"{label}: host {host}'s clock {where} at event {e.seq} ({e.type}); "
                    "events of that host are missing from the trace (was its host lost before it reported them?)"
                )
    lost = {
        g: f" ({e.note}: its events were lost with it)" for e in events if e.type == "host_lost" for g in e.gates or ()
    }
    for host, mine in per_host.items():
        known: dict[str, int] = {}
        previous: dict[str, int] = {}
        for e in mine:
            expected = dict(previous)
            for other, time in e.vc.items():
                if other == host or time <= known.get(other, 0):
                    continue
                if not 1 <= time <= len(per_host.get(other, ())):
                    has = f"only {len(per_host[other])} events" if other in per_host else "no events"
                    raise DrawError(
                        f"{label}: event {e.seq} at {host} has heard of event {time} of {other}, but {other} has "
                        f"{has} in the trace{lost.get(other, '')}; ShiViz needs every event a clock points at"
                    )
                known[other] = time
                for key, value in per_host[other][time - 1].vc.items():
                    expected[key] = max(expected.get(key, 0), value)
            expected[host] = e.vc[host]
            if {k: v for k, v in expected.items() if v} != {k: v for k, v in e.vc.items() if v}:
                raise DrawError(
                    f"{label}: event {e.seq} at {host} has the clock {e.vc}, but what it heard of adds up to {expected}"
                )
            previous = dict(e.vc)
