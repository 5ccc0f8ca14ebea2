"""`gatemesh draw circuit|lamport` and `gatemesh export shiviz`: pictures and logs from traces.

Each command reads trace files (written by `gatemesh run ... --trace FILE`) and calls viz/,
which holds the only drawing code; these commands only parse arguments and write files.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.api import run_circuit
from orchestrator.circuit import CIRCUIT_SUFFIXES
from orchestrator.cli_common import (
    DASH_FIRST,
    RUN_TIMEOUT,
    BrokerOption,
    FaultsOption,
    TimeoutOption,
    check_writable,
    err,
    is_assignment,
    load_circuit,
    parse_assignments,
    parse_faults,
)
from orchestrator.errors import GatemeshError, InputError, RunError
from orchestrator.recorder import Recorder
from orchestrator.trace import Trace, TraceError, read_trace
from viz.caption import caption, formula
from viz.circuit import MAX_GATES, check_size, draw_circuit, state_at, step_of_message
from viz.lamport import MAX_GATES as LAMPORT_MAX_GATES
from viz.lamport import draw_lamport
from viz.shiviz import export
from viz.svg import DrawError

draw_app = typer.Typer(help="Pictures of a run (SVG): the CS231n circuit figure and the Lamport diagram.")
export_app = typer.Typer(help="A traced run in other tools' formats.")

OutOption = Annotated[Path, typer.Option("-o", "--out", help="the file to write")]
MaxGatesOption = Annotated[int, typer.Option("--max-gates", min=1, help="refuse circuits larger than this")]
RunOption = Annotated[str | None, typer.Option("--run", help="the run to show (default: the trace's last run)")]


def _write(path: Path, content: str, what: str) -> None:
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write {what}: {exc}") from exc
    err.print(f"wrote {what} to {path}", highlight=False)


@draw_app.command("circuit")
def draw_circuit_command(
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"SOURCE (an expression, a program or a circuit file {DASH_FIRST}) and input values x=-2 y=5"
        ),
    ] = None,
    output_file: OutOption = Path("circuit.svg"),
    trace: Annotated[Path | None, typer.Option("--trace", help="draw the numbers of this traced run")] = None,
    step: Annotated[
        int | None, typer.Option("--step", min=0, help="show the wires after the trace's first K events")
    ] = None,
    message: Annotated[
        int | None,
        typer.Option(
            "--message",
            min=1,
            help="show the wires as --explain's line K leaves them: its message delivered, or its fault done",
        ),
    ] = None,
    run: RunOption = None,
    broker: Annotated[
        str | None, typer.Option("--broker", "-b", envvar="GATEMESH_BROKER", help="broker for a run (with inputs)")
    ] = None,
    faults: FaultsOption = "",
    timeout: TimeoutOption = RUN_TIMEOUT,
    max_gates: MaxGatesOption = MAX_GATES,
) -> None:
    """The circuit as the CS231n notes draw it: values green above each wire, gradients red below.

    With --trace the numbers are the run's; with input values (and no --trace) the circuit is
    run once through the broker (with --faults, if given), traced, and drawn, even a run the
    faults made fail (a dropped message's number is drawn as lost); with neither, the bare circuit.
    """
    check_writable("-o", output_file, (".svg",))
    if step is not None and message is not None:
        raise InputError("--step counts events, --message messages: give one of them")
    given = list(arguments or [])
    positional = trace is None and bool(given) and (_names_a_trace(given[0]) or given[0].lower().endswith(".jsonl"))
    if positional:  # as `draw lamport` takes it
        if more := [name for name in given[1:] if _names_a_trace(name)]:
            raise _one_trace([given[0], *more])
        trace, given = Path(given[0]), given[1:]
    run_asked = faults or timeout != RUN_TIMEOUT
    if run_asked and trace is not None:
        raise InputError("--faults and --timeout apply to a run: give SOURCE and input values (x=-2 y=5)")
    if trace is not None:
        recorded = read_trace(trace)
        source, values = (given[0], given[1:]) if given and not is_assignment(given[0]) else (None, given)
        if values:
            raise _with_inputs(trace)
        if source is not None and ("/" in source or "." in source) and _names_a_trace(source):  # `f` is an expression
            if Path(source).resolve() == trace.resolve():
                raise InputError(f"{source} is given twice, as SOURCE and as --trace: give it once")
            raise InputError(f"{source}: a second trace beside --trace {trace}; draw one trace at a time")
        if source is not None and load_circuit(source).model_dump() != recorded.circuit.model_dump():
            raise InputError(f"{source!r} is not the circuit recorded in {trace}; drop SOURCE to draw the trace's")
        svg = _circuit_svg(
            recorded, run, step if message is None else step_of_message(recorded, run, message), max_gates
        )
    else:
        if not given:
            raise InputError("give a SOURCE (and input values), or a trace file")
        if step is not None or message is not None or run is not None:
            raise InputError("--step, --message and --run read a trace: give a trace file")
        if run_asked and not given[1:] and (inputs := load_circuit(given[0]).inputs):
            named = " ".join(f"{name}=..." for name in inputs)
            raise InputError(f"--faults and --timeout apply to a run: give the input values ({named})")
        if given[1:] or run_asked:  # run once (a circuit without inputs too), and draw that run
            svg = _circuit_svg(
                _traced_run(given[0], given[1:], broker, faults, timeout, max_gates), None, None, max_gates
            )
        else:
            circuit = load_circuit(given[0])
            check_size(circuit, max_gates)
            svg = draw_circuit(circuit, caption=formula(circuit), max_gates=max_gates)
    _write(output_file, svg, "the circuit figure")


def _names_a_trace(name: str) -> bool:
    """A file that is not a circuit file: a trace (read_trace says so if it is not one)."""
    return Path(name).is_file() and not name.lower().endswith(CIRCUIT_SUFFIXES)


def _circuit_svg(trace: Trace, run: str | None, step: int | None, max_gates: int) -> str:
    chosen = trace.run_id(run)
    if not any(e.run == chosen for e in trace.events):  # (a live view draws a run before its first event)
        raise DrawError(f"run {chosen} has no events in this trace: nothing to draw")
    _warn_if_cut_short(trace, chosen)
    state = state_at(trace, run, step)
    return draw_circuit(trace.circuit, state, caption=caption(trace, run, step), max_gates=max_gates)


def _warn_if_cut_short(trace: Trace, run: str) -> None:
    if why := trace.cut_short(run):
        err.print(f"warning: {why}", highlight=False, soft_wrap=True)


@draw_app.command("lamport")
def draw_lamport_command(
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            help="a trace file (gatemesh run ... --trace FILE), or SOURCE (an expression, a program or a "
            f"circuit file {DASH_FIRST}) and input values x=-2 y=5: run once, traced, and drawn",
            metavar="TRACE | SOURCE [NAME=VALUE ...]",
            show_default=False,
        ),
    ] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="the trace file to draw (as `draw circuit --trace` takes it)")
    ] = None,
    output_file: OutOption = Path("run.svg"),
    run: RunOption = None,
    broker: BrokerOption = None,
    faults: FaultsOption = "",
    timeout: TimeoutOption = RUN_TIMEOUT,
    max_gates: MaxGatesOption = LAMPORT_MAX_GATES,
) -> None:
    """The space-time diagram: a line per gate (grouped by host), an arrow per message, faults marked.

    Given SOURCE and input values, the circuit is run once through the broker (with --faults, if
    given) and that run is drawn, even one the faults made fail.
    """
    check_writable("-o", output_file, (".svg",))
    given = list(arguments or [])
    if trace is not None:
        if more := [g for g in given if _names_a_trace(g)]:  # another trace: not a SOURCE
            raise _one_trace([str(trace), *more])
        if given:
            raise InputError(
                f"--trace {trace} draws a recorded run; SOURCE and input values make a new one: give one or the other"
            )
        given = [str(trace)]
    if not given:
        raise InputError("give a trace file, or SOURCE and input values to run it once and draw that run")
    first, *values = given
    if values and _names_a_trace(first) and (more := [v for v in values if _names_a_trace(v)]):
        raise _one_trace([first, *more])
    if values and _names_a_trace(first) and all(is_assignment(value) for value in values):
        try:
            read_trace(Path(first))
        except TraceError:
            pass  # no trace: what it is not is said below (a circuit file's name, say, mistyped)
        else:
            raise _with_inputs(first)
    if not values and _names_a_trace(first):
        # GATEMESH_BROKER, exported for a cluster, is no reason to refuse to draw a file
        typed_broker = broker is not None and broker != os.environ.get("GATEMESH_BROKER")
        if faults or typed_broker or timeout != RUN_TIMEOUT:
            raise InputError(
                f"{first}: a trace file is drawn as it is; --faults, --broker and --timeout apply to a run "
                "(SOURCE and input values)"
            )
        recorded = read_trace(Path(first))
    elif run is not None:
        raise InputError("--run picks a run of a trace file; SOURCE and input values make one run, drawn as it is")
    else:
        recorded = _traced_run(first, values, broker, faults, timeout, max_gates)
    chosen = recorded.run_id(run)
    _warn_if_cut_short(recorded, chosen)
    title = caption(recorded, chosen)
    _write(output_file, draw_lamport(recorded, chosen, caption=title, max_gates=max_gates), "the Lamport diagram")


def _one_trace(traces: list[str]) -> InputError:
    return InputError(
        f"{', '.join(traces)}: one trace a picture (--run picks a run of a trace); gatemesh export shiviz shows several"
    )


def _with_inputs(trace: Path | str) -> InputError:
    return InputError(f"{trace} is drawn with the inputs it recorded: drop the name=value arguments")


def _traced_run(
    source: str, values: list[str], broker: str | None, faults: str, timeout: float, max_gates: int
) -> Trace:
    """SOURCE run once with these inputs, traced: its trace, also when the run failed (a fault
    can make it), with a warning that says how."""
    is_file = source.lower().endswith(CIRCUIT_SUFFIXES)
    try:
        circuit = load_circuit(source)
    except GatemeshError as exc:
        if values or is_file:
            raise
        raise InputError(
            f"no trace file {source!r}: give a trace (gatemesh run ... --trace FILE), "
            "or SOURCE and input values (x=-2 y=5) to run it once and draw that run"
        ) from exc
    inputs = parse_assignments(values)
    if not values and circuit.inputs:  # a circuit with no inputs (2*3) runs as it is
        named = " ".join(f"{name}=..." for name in circuit.inputs)
        what = "not a trace but a circuit file" if is_file else "not a trace file but a circuit"
        raise InputError(
            f"{source}: {what}; give its input values to run it once and draw that run ({named}), "
            f"or draw the circuit itself with `gatemesh draw circuit {shlex.quote(source)}`"
        )
    check_size(circuit, max_gates)  # before a run, not after it
    plan = parse_faults(faults)
    recorder = Recorder(faults=plan, faults_text=faults)  # the caption names the faults, as a run's trace does
    try:
        asyncio.run(run_circuit(circuit, inputs, broker=broker, trace=recorder, faults=plan, timeout=timeout))
    except RunError as exc:
        under = f" (under --faults {faults}: the picture shows what they did)" if plan is not None else ""
        err.print(f"warning: the run failed: {exc}{under}", highlight=False, soft_wrap=True)
    return recorder.trace()


@export_app.command("shiviz")
def export_shiviz_command(
    traces: Annotated[list[Path], typer.Argument(help="one or more trace files; every run of each is exported")],
    output_file: OutOption = Path("runs.log"),
) -> None:
    """A ShiViz log (DistributedClocks/shiviz): open it there with "Choose File"."""
    check_writable("-o", output_file, (".log", ".txt"))  # a text log, not a picture nor a trace
    names = [path.name for path in traces]
    named = [
        (name if names.count(name) == 1 else str(path), read_trace(path))
        for name, path in zip(names, traces, strict=True)
    ]
    for _, trace in named:  # ShiViz draws what is there, as the pictures do: said as they say it
        for run in trace.runs():
            _warn_if_cut_short(trace, run)
    _write(output_file, export(named), "the ShiViz log")
