"""The words that go with a picture: the circuit written as a formula (as its program named
its stages), and a caption that says at which inputs, in which run, with which faults and after
how many events the picture shows it."""

from __future__ import annotations

import re

from gates.ops import OPS
from gates.trace_records import loses_its_message
from orchestrator.circuit import Circuit, GateDef
from orchestrator.trace import Trace
from viz.svg import short

INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2)}
"""An infix gate's operator and how tightly it binds (Python's order: + - below * /)."""
NEG, POW, ATOM = 2.5, 3, 4
"""How tightly -a, a**k and a name, number or call bind: -x**2 is -(x**2), as Python reads it."""
MAX_FORMULA = 80
WRITTEN = 2 * MAX_FORMULA
"""Characters of a gate's formula kept: more than a caption shows (it shows the start)."""


def formula(circuit: Circuit) -> str:
    """`f = (x + y) * z`: the circuit written out with the brackets its order needs and no more
    (`sigmoid(w0 * x0 + w1 * x1 + w2)`), its named stages as the program named them
    (`q = x + y; f = q * z`); if that gets long, its last stage and how many came before, or
    the start of its expression, with its size."""
    named = [g.id for g in circuit.order if _named(g) and g.id != circuit.output]
    texts: dict[str, tuple[str, float]] = {}
    """Each gate's value written out (its first WRITTEN characters: a caption shows the start),
    and how tightly its outermost operator binds; made once per gate, in circuit order, from its
    inputs' (a gate read twice, x*x*x..., is not written out again down every path)."""
    for g in circuit.order:
        if g.op == "input":
            texts[g.id] = _as_typed(g.id, circuit), ATOM
        else:
            args = [(_as_typed(s, circuit), ATOM) if s in named else texts[s] for s in g.inputs]  # named: by name
            texts[g.id] = _cut(_composed(g, args))

    def name(gate: str) -> str:
        """What the stage is called: an output that is an input or a constant has no name of its own (`f = x`)."""
        bare = gate == circuit.output and circuit.by_id[gate].op in ("input", "const")
        return "f" if bare else _as_typed(gate, circuit)

    lines = [f"{name(gate)} = {texts[gate][0]}" for gate in [*named, circuit.output]]
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


def _composed(g: GateDef, args: list[tuple[str, float]]) -> tuple[str, float]:
    """Gate `g` written over its inputs' formulas (`args`), and how tightly it binds."""
    if g.op == "const":
        return short(g.param), NEG if (g.param or 0) < 0 else ATOM
    if g.op in INFIX:
        symbol, binds = INFIX[g.op]
        left, right = _operand(args[0], binds - 0.5), _operand(args[1], binds)  # a - (b - c): as the gates are
        return f"{left} {symbol} {right}", binds
    if g.op == "pow":
        return f"{_operand(args[0], POW)}**{short(g.param)}", POW
    if g.op == "neg":
        return f"-{_operand(args[0], NEG)}", NEG
    if g.op == "inv":  # the compiler's gate for 1/a: written as typed
        return f"1 / {_operand(args[0], INFIX['div'][1])}", INFIX["div"][1]
    return f"{g.op}({', '.join(text for text, _ in args)})", ATOM


def _cut(found: tuple[str, float]) -> tuple[str, float]:
    text, binds = found
    return (text, binds) if len(text) <= WRITTEN else (text[:WRITTEN] + "\u2026", binds)


def _as_typed(gate: str, circuit: Circuit) -> str:
    """`a` for `a.2`: the compiler numbers a name given again (`a = a * a`); the program wrote `a`.
    Only where `a` is a gate too: a circuit file may name gates `h.1` and `h.2` itself."""
    name, dot, version = gate.rpartition(".")
    return name if dot and version.isdigit() and name in circuit.by_id else gate


def _named(g: GateDef) -> bool:
    """A gate a program named (`q = x + y`), not one the compiler numbered (`add_1`)."""
    return not OPS[g.op].fed and re.fullmatch(rf"{g.op}_\d+", g.id) is None


def _operand(written: tuple[str, float], up_to: float) -> str:
    """An operand's text, in brackets unless its operator binds more tightly than `up_to`."""
    text, binds = written
    return text if binds > up_to else f"({text})"


def caption(trace: Trace, run: str | None = None, step: int | None = None) -> str:
    """`f = (x + y) * z at x=-2, y=5, z=-4; after 20 of 58 events, 5 of its 16 broker crossings`
    (what the figure shows; --explain numbers the crossings, a second copy's too; a dropped
    message never crosses, and is counted apart),
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
        when = f"; after {step} of {len(trace.events)} events"
        if which and seqs:  # --step counts the whole trace's events
            when += f" (this run's are {seqs[0]} to {seqs[-1]})"
        when += f", {crossed} of its {len(crossings)} broker crossings"  # copies included: what --explain tells
        dropped = sum(1 for e in trace.events if e.run == chosen and loses_its_message(e) and e.seq <= step)
        when += f" ({dropped} message{'s' if dropped != 1 else ''} dropped, never crossing)" if dropped else ""
    return f"{formula(trace.circuit)}" + (f" at {given}" if given else "") + which + faults + failed + when


def failure(error: str, run: str) -> str:
    """A run's error, short: without its run id, up to its first ';' (a timeout goes on to list
    every gate still waiting)."""
    short = error.replace(f"run {run}", "").lstrip(": ")
    return short.split(";")[0].strip()
