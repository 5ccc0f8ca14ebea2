"""The words that go with a picture: the circuit written as a formula (as its program named
its stages), and a caption that says at which inputs, in which run, with which faults and after
how many events the picture shows it."""

from __future__ import annotations

import re

from gates.ops import OPS
from orchestrator.circuit import Circuit, GateDef
from orchestrator.trace import Trace
from viz.svg import short

INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
MAX_FORMULA = 80


def formula(circuit: Circuit) -> str:
    """`f = (x + y) * z`: the circuit written out, its named stages as the program named them
    (`q = x + y; f = q * z`); if that gets long, its last stage and how many came before, or
    the start of its expression, with its size."""
    named = [g.id for g in circuit.order if _named(g) and g.id != circuit.output]

    def written(gate: str, depth: int) -> str:
        g = circuit.by_id[gate]
        if g.op == "input" or depth > 12 or (depth > 0 and gate in named):
            return _as_typed(g.id, circuit)
        if g.op == "const":
            return short(g.param)
        args = [written(source, depth + 1) for source in g.inputs]
        if g.op in INFIX:
            return f"({args[0]} {INFIX[g.op]} {args[1]})"
        if g.op == "pow":
            return f"{args[0]}**{short(g.param)}"
        if g.op == "neg":
            return f"-{args[0]}"
        return f"{g.op}({', '.join(_bare(arg) for arg in args)})"

    lines = [f"{_as_typed(gate, circuit)} = {_bare(written(gate, 0))}" for gate in [*named, circuit.output]]
    whole = "; ".join(lines)
    if len(whole) <= MAX_FORMULA:
        return whole
    size = f"{len(circuit.gates)} gates"
    last = lines[-1]
    stages = f"{last}, after {len(named)} named stage{'s' if len(named) > 1 else ''} ({size})"
    if named and len(stages) <= MAX_FORMULA:
        return stages
    cut = last[: MAX_FORMULA - len(size) - 5].rsplit(" ", 1)[0]  # at a space: no name cut in two
    return f"{cut} \u2026 ({size})"


def _as_typed(gate: str, circuit: Circuit) -> str:
    """`a` for `a.2`: the compiler numbers a name given again (`a = a * a`); the program wrote `a`.
    Only where `a` is a gate too: a circuit file may name gates `h.1` and `h.2` itself."""
    name, dot, version = gate.rpartition(".")
    return name if dot and version.isdigit() and name in circuit.by_id else gate


def _named(g: GateDef) -> bool:
    """A gate a program named (`q = x + y`), not one the compiler numbered (`add_1`)."""
    return not OPS[g.op].fed and re.fullmatch(rf"{g.op}_\d+", g.id) is None


def _bare(written: str) -> str:
    """`a + b` for `(a + b)`: the outer brackets of a whole argument or formula say nothing."""
    if written.startswith("(") and written.endswith(")"):
        depth = 0
        for i, char in enumerate(written):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and i < len(written) - 1:
                return written
        return written[1:-1]
    return written


def caption(trace: Trace, run: str | None = None, step: int | None = None) -> str:
    """`f = (x + y) * z at x=-2, y=5, z=-4; after 20 of 58 events (5 of the 16 messages crossed)`
    (what the figure shows; --explain numbers the crossings),
    with which run it is when the trace has several, and why it failed if it did."""
    chosen = trace.run_id(run)
    runs = trace.header.runs
    record = next((r for r in runs if r.run == chosen), None)
    inputs = record.inputs if record is not None else trace.header.inputs
    given = ", ".join(f"{k}={short(v)}" for k, v in inputs.items())
    which = ""
    if len(runs) > 1 and record is not None:
        which = f" (run {runs.index(record) + 1} of {len(runs)}, {chosen})"
    faults = f"; faults {trace.header.faults}" if trace.header.faults else ""
    failed = f"; the run failed: {failure(record.error, chosen)}" if record is not None and record.error else ""
    when = ""
    seqs = [e.seq for e in trace.events if e.run == chosen]
    if step is not None:  # events are sends, crossings, receipts, computes: --explain tells the crossings
        crossings = [e.seq for e in trace.events if e.run == chosen and e.type == "cross"]
        crossed = sum(1 for seq in crossings if seq <= step)
        when = f"; after {step} of {len(trace.events)} events ({crossed} of the {len(crossings)} messages crossed)"
    if when and which and seqs:  # --step counts the whole trace's events
        when += f" (this run's events are among {seqs[0]} to {seqs[-1]})"
    return f"{formula(trace.circuit)}" + (f" at {given}" if given else "") + which + faults + failed + when


def failure(error: str, run: str) -> str:
    """A run's error, short: without its run id, up to its first ';' (a timeout goes on to list
    every gate still waiting)."""
    short = error.replace(f"run {run}", "").lstrip(": ")
    return short.split(";")[0].strip()
