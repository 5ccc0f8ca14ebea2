"""`gatemesh`: compile expressions into circuits of gate actors and run them over MQTT."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.api import broker_url, deployed, run_circuit
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.errors import GatemeshError, InputError
from orchestrator.examples import EXAMPLES
from orchestrator.result import RunResult

app = typer.Typer(
    help="Backpropagation as a distributed system: every gate an actor, every value an MQTT message.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

BrokerOption = Annotated[
    str | None,
    typer.Option("--broker", "-b", help="mqtt://host:port of a running broker; default: start the embedded one"),
]
OutputOption = Annotated[str | None, typer.Option("--output", help="the name whose value is the output")]


def load_circuit(source: str, output: str | None = None) -> Circuit:
    """A circuit file (.json/.yaml/.yml) if SOURCE names one, else an expression or program."""
    if source.endswith((".json", ".yaml", ".yml")):
        circuit = Circuit.load(Path(source))
        if output is not None and output != circuit.output:
            raise InputError("--output applies to expressions; a circuit file names its own output")
        return circuit
    return compile_source(source, output=output)


def parse_assignments(assignments: list[str]) -> dict[str, float]:
    """['x=-2', 'y=5'] -> {'x': -2.0, 'y': 5.0}, with errors that name the bad argument."""
    values: dict[str, float] = {}
    for text in assignments:
        name, sep, number = text.partition("=")
        if not sep or not name.strip():
            raise InputError(f"{text!r}: give inputs as name=value, like x=-2")
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"{text!r}: {number!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{text!r}: the value must be finite")
        values[name.strip()] = value
    return values


def show(result: RunResult, title: str | None = None) -> None:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("input")
    table.add_column("gradient", justify="right")
    for name, grad in result.grads.items():
        table.add_row(name, f"{grad:.10g}")
    out.print(f"value = [bold]{result.value:.10g}[/bold]")
    out.print(table)


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="an expression, a program (q = x + y; f = q * z) or a circuit file")],
    assignments: Annotated[list[str] | None, typer.Argument(help="input values: x=-2 y=5 z=-4")] = None,
    broker: BrokerOption = None,
    output: OutputOption = None,
    timeout: Annotated[float, typer.Option(help="seconds before a run fails, naming the gates it waits on")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help='print only {"value": ..., "grads": {...}}')] = False,
) -> None:
    """Deploy the gates, run one forward and backward pass through the broker, print the result."""
    circuit = load_circuit(source, output)
    inputs = parse_assignments(assignments or [])
    result = asyncio.run(run_circuit(circuit, inputs, broker=broker, timeout=timeout))
    if as_json:
        print(result.model_dump_json())
    else:
        show(result)


@app.command("compile")
def compile_command(
    source: Annotated[str, typer.Argument(help="an expression or a program")],
    output_file: Annotated[Path, typer.Option("-o", "--out", help="where to write the circuit (.json, .yaml)")],
    output: OutputOption = None,
    name: Annotated[str, typer.Option(help="the circuit's name")] = "circuit",
) -> None:
    """Compile SOURCE into a circuit file that `gatemesh run FILE` runs."""
    circuit = compile_source(source, output=output, name=name)
    circuit.dump(output_file)
    err.print(f"wrote {len(circuit.gates)} gates to {output_file} (inputs: {', '.join(circuit.inputs)})")


@app.command()
def demo(broker: BrokerOption = None, timeout: float = 10.0) -> None:
    """Run the CS231n notes' worked examples through the mesh, one after another."""

    async def all_examples() -> None:
        async with broker_url(broker) as url:
            out.print(f"broker: {url}\n")
            for number, example in enumerate(EXAMPLES, 1):
                circuit = compile_source(example.source)
                async with deployed(circuit, url) as runner:
                    result = await runner.run(example.inputs, timeout=timeout)
                source = "; ".join(line.strip() for line in example.source.strip().splitlines())
                given = ", ".join(f"{k}={v:g}" for k, v in example.inputs.items())
                out.rule(f"{number}. {example.title}")
                out.print(f"[cyan]{source}[/cyan]   at {given}")
                out.print(
                    f"{len(circuit.gates)} gate actors, {circuit.messages_per_pass()} messages through the broker"
                )
                show(result)
                out.print(f"[dim]{example.lesson}[/dim]\n")

    asyncio.run(all_examples())


def main() -> None:
    """Entry point: gatemesh errors become one clear line on stderr and exit status 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except GatemeshError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
