"""`gatemesh run`, `demo` and `compile`: turn source into a circuit and push passes through the mesh.

`run` and `demo` open their runners the same way (`open_runner_at`), so a failure inside the
gates' task group reaches the user by the same path and with the same message from either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from broker.security import SecureDir
from gates.faults import Faults
from gates.lifecycle import leaves
from gates.transport import DEFAULT_BROKER, BrokerAddress
from orchestrator.api import broker_url, deployed
from orchestrator.circuit import CIRCUIT_SUFFIXES, Circuit
from orchestrator.cli_common import (
    DASH_FIRST,
    RUN_TIMEOUT,
    BrokerOption,
    FaultsOption,
    OutputOption,
    TimeoutOption,
    broker_address,
    check_writable,
    compile_warned,
    err,
    host_choice,
    is_assignment,
    load_circuit,
    out,
    parse_assignments,
    parse_faults,
    print_line,
    print_result,
    say_waiting,
    secure_dir,
)
from orchestrator.compiler import compile_source
from orchestrator.deploy import on_deployment, on_hosts
from orchestrator.errors import HostLost, InputError, RunTimeout
from orchestrator.examples import EXAMPLES
from orchestrator.placement import STRATEGIES
from orchestrator.recorder import Recorder, explain_to
from orchestrator.result import RunResult
from orchestrator.runner import Runner


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command("compile")(compile_command)
    app.command()(demo)


def run(
    source: Annotated[
        str | None,
        typer.Argument(help=f"an expression, a program (q = x + y; f = q * z) or a circuit file {DASH_FIRST}"),
    ] = None,
    assignments: Annotated[list[str] | None, typer.Argument(help="input values: x=-2 y=5 z=-4")] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            "-b",
            envvar="GATEMESH_BROKER",
            help=f"mqtt://host:port of a running broker; default: the embedded one, or {DEFAULT_BROKER} "
            "with --hosts or --deployed",
        ),
    ] = None,
    output: OutputOption = None,
    timeout: TimeoutOption = RUN_TIMEOUT,
    as_json: Annotated[bool, typer.Option("--json", help='print only {"value": ..., "grads": {...}}')] = False,
    deployed_name: Annotated[
        str | None, typer.Option("--deployed", help="run on this deployment (see `gatemesh deploy`); no SOURCE")
    ] = None,
    hosts: Annotated[
        str | None,
        typer.Option(
            "--hosts",
            help="run the gates on gate hosts for the length of the run: a number (wait for that many) "
            "or names h1,h2; default: in this process",
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            "--placement",
            help=f"with --hosts: {' | '.join(STRATEGIES)} | a .json/.yaml file mapping gate -> host "
            "(default: round-robin)",
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="tell every message of the run as it crosses the broker")
    ] = False,
    faults: FaultsOption = "",
    retries: Annotated[int, typer.Option(min=0, help="run again (fresh run id) after a timeout, this many times")] = 0,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="record every event of the run, with clocks, to this .jsonl file")
    ] = None,
    secure: Annotated[
        Path | None,
        typer.Option(
            "--secure",
            help="a directory made by `gatemesh secure init`: connect with the orchestrator's account (with "
            "--hosts, the ACL is rewritten for the run's deployment too); needs --hosts or --deployed",
        ),
    ] = None,
) -> None:
    """Run one forward and backward pass through the broker and print the value and gradients.

    The gates run as actors in this process, or, with --hosts, on gate hosts for the length
    of the run, or, with --deployed NAME, on a deployment that stays up.
    """
    given = [source] if source is not None else []
    given += assignments or []
    fault_plan = parse_faults(faults)
    check_writable("--trace", trace, (".jsonl",))  # not a picture's name: it would be overwritten with JSON
    if fault_plan is not None and (deployed_name is not None or hosts is not None):
        raise InputError("--faults applies to gates in this process; give hosts their own (gatemesh host --faults)")
    if placement is not None and deployed_name is not None:
        raise InputError("--placement: a deployment keeps the placement it was deployed with; drop --placement")
    if placement is not None and hosts is None:
        raise InputError("--placement places gates on gate hosts: give --hosts too")
    if secure is not None and deployed_name is None and hosts is None:
        raise InputError("--secure: gates in this process have no accounts; run on --hosts or --deployed NAME")
    accounts = secure_dir(secure)
    target: Circuit | str
    if deployed_name is not None:
        if hosts is not None:
            raise InputError("--deployed runs where the deployment already is; drop --hosts")
        if output is not None:
            raise InputError("--output: a deployment keeps the output it was deployed with; drop --output")
        target = deployed_name
        if given and not is_assignment(given[0]):
            raise InputError(
                f"--deployed runs the circuit deployed as {deployed_name}: give no source, only its inputs"
            )
        inputs = parse_assignments(given)
    else:
        if not given:
            raise InputError("give an expression, a program or a circuit file (or --deployed NAME)")
        target = load_circuit(given[0], output)
        inputs = parse_assignments(given[1:])
    console = err if as_json else out

    narrated = False
    """Whether --explain has said anything (a run that fails before any message says why not)."""

    def narrate(line: str) -> None:
        nonlocal narrated
        narrated = True
        print_line(line, console=console)

    def retried(said: str) -> None:
        err.print(f"[yellow]retry:[/yellow] {escape(said)}", highlight=False, soft_wrap=True)

    # --explain tells the trace's crossings, so sentences, trace file and pictures share one source
    recorder = Recorder(faults=fault_plan, faults_text=faults) if trace or explain else None
    id_note = explain_to(recorder, narrate) if recorder is not None and explain else None

    async def one_run() -> RunResult:
        here = isinstance(target, Circuit) and hosts is None
        async with (
            _broker_for(here, broker, accounts) as address,
            open_runner_at(
                target, address, hosts, placement or "round-robin", timeout, recorder, fault_plan, accounts
            ) as runner,
        ):
            try:
                return await runner.run(inputs, timeout=timeout, retries=retries, on_retry=retried)
            finally:
                if recorder is not None:  # the tap may still hold the last crossings: --explain tells them too
                    await recorder.drain()
                    if trace is not None:
                        recorder.write(trace)

    try:
        result = asyncio.run(one_run())
    except RunTimeout as exc:
        told = (
            _faults_told(fault_plan, target, timeout, retries=retries)
            if fault_plan and isinstance(target, Circuit)
            else ""
        )
        if not told:
            raise
        raise RunTimeout(f"{exc}; under --faults {faults}: {told}", exc.run, exc.waiting_on, exc.arrived) from exc
    except (HostLost, BaseExceptionGroup) as exc:
        found = [exc] if isinstance(exc, HostLost) else leaves(exc)
        lost = next((e for e in found if isinstance(e, HostLost)), None)
        if id_note is not None and lost is not None and not narrated:  # --explain, and not a word said yet
            gone = ", ".join(lost.hosts)
            narrate(f"  (nothing to tell: no message was sent, as the orchestrator knew that host(s) {gone} had gone)")
        raise
    finally:
        if id_note is not None and (note := id_note()):
            narrate(note)
    if as_json:
        print_line(result.model_dump_json())
    else:
        print_result(result, given=list(inputs))


def _faults_told(faults: Faults, circuit: Circuit, timeout: float, *, retries: int = 0) -> str:
    """What the faults a run was given may have done to make it time out ("" if they cannot have):
    a timeout's standing names the gates that wait, not the message lost or late on the way."""
    told = []
    if faults.drop > 0:
        again = "" if retries else "; --retries N runs again"
        told.append(f"drops {faults.drop:.0%} of messages (--explain says which{again})")
    hops = circuit.pass_hops()
    longest = faults.delay_ms[1] / 1000 * hops
    if longest >= timeout:
        told.append(
            f"delays a message by up to {faults.delay_ms[1]:g} ms, and a pass's {hops} messages in a row can add "
            f"up to {longest:g} s, more than the {timeout:g} s timeout (a longer --timeout lets them arrive)"
        )
    return "the fault injector " + "; it also ".join(told) if told else ""


@contextlib.asynccontextmanager
async def _broker_for(
    in_process: bool, broker: str | None, accounts: SecureDir | None = None
) -> AsyncIterator[BrokerAddress]:
    """Gates in this process use the given broker or an embedded one; hosts need one that is up."""
    if in_process:
        async with broker_url(broker) as address:
            yield address
    else:
        yield broker_address(broker or DEFAULT_BROKER, accounts)


@contextlib.asynccontextmanager
async def open_runner_at(
    target: Circuit | str,
    address: BrokerAddress,
    hosts: str | None,
    placement: str,
    timeout: float,
    recorder: Recorder | None = None,
    faults: Faults | None = None,
    secure: SecureDir | None = None,
) -> AsyncIterator[Runner]:
    """A runner on a named deployment, on hosts for this run only (with `secure`, the ACL rewritten
    for it), or on actors in this process."""
    if isinstance(target, str):
        async with on_deployment(target, address, ready_timeout=timeout, recorder=recorder) as runner:
            yield runner
    elif hosts is not None:
        choice = host_choice(hosts)
        placed = on_hosts(
            target,
            address,
            hosts=choice,
            placement=placement,
            timeout=timeout,
            recorder=recorder,
            secure=secure,
            waiting=say_waiting,
        )
        async with placed as runner:
            yield runner
    else:
        async with deployed(target, address, recorder=recorder, faults=faults) as runner:
            yield runner


def compile_command(
    source: Annotated[str, typer.Argument(help=f"an expression or a program {DASH_FIRST}")],
    output_file: Annotated[Path, typer.Option("-o", "--out", help="where to write the circuit (.json, .yaml)")],
    output: OutputOption = None,
    name: Annotated[str, typer.Option(help="the circuit's name")] = "circuit",
) -> None:
    """Compile SOURCE into a circuit file that `gatemesh run FILE` runs (or write a circuit file
    in the other format: .json to .yaml, or back)."""
    if source.lower().endswith(CIRCUIT_SUFFIXES):
        if name != "circuit":
            raise InputError("--name applies to expressions; a circuit file names its own circuit")
        circuit = load_circuit(source, output)
    else:
        circuit = compile_warned(source, output=output, name=name)
    circuit.dump(output_file)
    err.print(f"wrote {len(circuit.gates)} gates to {output_file} (inputs: {', '.join(circuit.inputs)})")


def demo(broker: BrokerOption = None, timeout: TimeoutOption = RUN_TIMEOUT) -> None:
    """Run the CS231n notes' worked examples through the mesh, one after another."""

    async def all_examples() -> None:
        async with broker_url(broker) as address:
            out.print(f"broker: {address}\n")
            for number, example in enumerate(EXAMPLES, 1):
                circuit = compile_source(example.source)
                async with open_runner_at(circuit, address, None, "round-robin", timeout, None) as runner:
                    result = await runner.run(example.inputs, timeout=timeout)
                source = "; ".join(line.strip() for line in example.source.strip().splitlines())
                given = ", ".join(f"{k}={v:g}" for k, v in example.inputs.items())
                out.rule(f"{number}. {example.title}")
                out.print(f"[cyan]{source}[/cyan]   at {given}")
                out.print(
                    f"{len(circuit.gates)} gate actors, {circuit.messages_per_pass()} messages through the broker"
                )
                print_result(result, given=list(example.inputs))
                out.print(f"[dim]{example.lesson}[/dim]\n")

    asyncio.run(all_examples())
