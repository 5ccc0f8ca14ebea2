"""`gatemesh train moons`: micrograd's demo, trained with every gate and parameter an actor.

Registered on the root app by `register(app)`. The steps run on tensor gates in this process
(over --broker, or the embedded broker), on gate hosts (--hosts), or, with --engine
reference, in this process without a broker (the numpy oracle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gates.faults import Faults
from gates.protocol import ErrorCode
from gates.transport import DEFAULT_BROKER
from orchestrator import boundary, checkpoint, mlp, moons, tensor_deploy
from orchestrator.api import broker_url
from orchestrator.checkpoint import Checkpoint
from orchestrator.circuit import CIRCUIT_SUFFIXES
from orchestrator.cli_common import (
    broker_address,
    check_writable,
    err,
    host_choice,
    out,
    parse_faults,
    print_line,
    say_waiting,
    seconds,
)
from orchestrator.errors import DeployError, GateFailed, GatemeshError, InputError, RunError, unwrap
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.train import (
    Engine,
    NotFinite,
    ReferenceEngine,
    Schedule,
    StepRecord,
    Training,
    check_start,
    fit,
    train,
)

MODELS = ("moons",)
ENGINES = ("mesh", "reference")
INITS = ("micrograd",)
PLACEMENT = "by-replica"


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    model: Annotated[str, typer.Argument(help="what to train: moons (micrograd's demo MLP 2-16-16-1)")] = "moons",
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            "-b",
            envvar="GATEMESH_BROKER",
            help=f"mqtt://host:port; default: the embedded one ({DEFAULT_BROKER} with --hosts)",
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="SGD steps; lr = 1.0 - 0.9 * k / steps")] = 100,
    batch: Annotated[int | None, typer.Option(min=1, help="points per step (default: all)")] = None,
    hosts: Annotated[
        str | None, typer.Option(help="train on gate hosts: a number (wait for that many) or names h1,h2")
    ] = None,
    placement: Annotated[
        str, typer.Option(help=f"with --hosts: {' | '.join(tensor_deploy.PLACEMENTS)} | a .json/.yaml file")
    ] = PLACEMENT,
    replicas: Annotated[int, typer.Option(min=1, help="copies of the network sharing the batch (data parallel)")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="random.seed for the init; also picks partial batches")] = 1337,
    init: Annotated[str, typer.Option(help="micrograd: MLP(2, [16, 16, 1])'s weights after random.seed(SEED)")] = (
        "micrograd"
    ),
    data: Annotated[Path | None, typer.Option(help="a CSV of x1,x2,label (-1/1); default: the built-in moons")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the steps and the result as JSON")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="draw the decision boundary to this file (.png, .svg or .pdf)")
    ] = None,
    checkpoint_file: Annotated[
        Path | None, typer.Option("--checkpoint", help="write the parameters here (.npz) after every step")
    ] = None,
    resume: Annotated[bool, typer.Option(help="start from --checkpoint instead of the init")] = False,
    engine: Annotated[str, typer.Option(help="mesh: gates as actors over MQTT; reference: numpy here")] = "mesh",
    faults: Annotated[str, typer.Option(help="faults for the gates in this process: dup=0.2,delay=0-5ms,reorder")] = "",
    timeout: Annotated[
        float, typer.Option(callback=seconds, help="seconds a step (or the deployment) may take")
    ] = 30.0,
) -> None:
    """Train micrograd's moons MLP; at 100 steps (the default) of all the built-in points each step's loss and
    accuracy equal micrograd's (with --batch, each step's are on its batch)."""
    for name, value, known in (("model", model, MODELS), ("--engine", engine, ENGINES), ("--init", init, INITS)):
        if value not in known:
            raise InputError(f"{name} {value!r}: choose {' or '.join(known)}")
    points = moons.load(data)
    schedule = Schedule(steps=steps, batch=batch or len(points), replicas=replicas, seed=seed)
    if resume and checkpoint_file is None:
        raise InputError("--resume needs --checkpoint FILE to resume from")
    if resume:
        assert checkpoint_file is not None
        start = checkpoint.load(checkpoint_file, mlp.param_shapes())
        check_start(schedule, start, points)  # its data set first: another one changes the default --batch
    else:
        schedule.check(len(points))
        start = Checkpoint(mlp.micrograd_init(seed), 0, seed, schedule.steps, schedule.batch)
    check_writable("--checkpoint", checkpoint_file)  # before training, not after its first step
    if checkpoint_file is not None and not resume and checkpoint_file.exists():
        raise InputError(
            f"--checkpoint {checkpoint_file}: the file exists; add --resume to go on from it, "
            "or remove it to start over"
        )
    check_writable("--plot", plot, (".png", ".svg", ".pdf"))  # nor after its last (the summary is printed after it)
    if plot is not None:
        boundary.check_available()
    if engine == "reference" and (hosts is not None or faults):
        raise InputError("--engine reference trains in this process: drop --hosts and --faults")
    if faults and hosts is not None:
        raise InputError("--faults applies to gates in this process; give hosts their own (gatemesh host --faults)")
    fault_plan = parse_faults(faults)
    if fault_plan is not None and fault_plan.drop > 0:
        raise InputError(
            "--faults drop=...: a lost message fails its step (training does not retry); use dup, delay, reorder"
        )
    host_choice(hosts)  # a bad --hosts is said now, not under a progress bar already drawn
    if hosts is None and placement != PLACEMENT:
        raise InputError("--placement places gates on gate hosts: give --hosts too")
    if not (placement in tensor_deploy.PLACEMENTS or placement.lower().endswith(CIRCUIT_SUFFIXES)):
        raise InputError(f"--placement {placement!r}: use {', '.join(tensor_deploy.PLACEMENTS)} or a .json/.yaml file")
    circuit = mlp.build(schedule.batch, replicas=schedule.replicas)
    if engine == "mesh":
        try:
            tensor_deploy.check_frames(circuit)
        except DeployError as exc:
            if resume and start.replicas is not None:  # a checkpoint's replicas are its own: not to change
                said = f"{exc}: the checkpoint's --replicas {start.replicas} cannot carry it; go on with --engine "
                said += "reference"
                raise InputError(said) from exc
            needed = mlp.fewest_replicas(schedule.batch)
            raise InputError(f"{exc}: split the batch of {schedule.batch} over --replicas {needed} or more") from exc
    if hosts is None and engine == "mesh" and broker is not None:
        broker_address(broker)  # a bad URL is said now, not under the progress bar
    console = err if as_json else out
    where = _where(engine, hosts, replicas)
    try:
        before, _ = fit(start.params, points)  # on all the points, as the trained parameters' fit is
    except NotFinite as exc:
        begun = f"the parameters of {checkpoint_file} (step {start.step})" if resume else "the starting parameters"
        raise InputError(f"{exc} with {begun}{off_scale(points, ': ')}") from exc

    async def run(on_step: Callable[[StepRecord], None], say: Callable[[str], None]) -> Training:
        async with _engine(engine, circuit, broker, hosts, placement, fault_plan, timeout, say) as chosen:
            return await train(chosen, circuit, points, schedule, start, checkpoint=checkpoint_file, on_step=on_step)

    with _progress(console, schedule.steps, start.step) as (on_step, say):
        try:
            training = asyncio.run(run(on_step, say))
        except (RunError, InputError) as exc:  # a step failed: what is kept, and what to do
            raise after_failure(exc, checkpoint_file, points) from None
        except BaseExceptionGroup as group:
            cause = unwrap(group)
            if not isinstance(cause, (RunError, InputError)):
                raise
            raise after_failure(cause, checkpoint_file, points) from group
    try:
        result = summary(training, schedule, start, where, len(circuit.gates) if engine == "mesh" else 0, points)
    except NotFinite as exc:
        kept = f"; {checkpoint_file} has its parameters" if checkpoint_file is not None else ""
        said = f"training diverged: after step {schedule.steps - 1}, the last, {exc}{kept}"
        raise InputError(said + off_scale(points, "; ")) from exc
    if plot is not None:
        boundary.draw(plot, training.params or start.params, points, f"gatemesh train {model}: {where}")
    if as_json:
        print_line(json.dumps(result))
    else:
        print_summary(console, result, plot)
    if said := advice(before, result, points, schedule.batch, start.step):
        console.print(said, highlight=False, soft_wrap=True)


def summary(
    training: Training, schedule: Schedule, start: Checkpoint, where: str, gates: int, points: moons.Points
) -> dict[str, Any]:
    """What --json prints: every step taken here (each with its loss before its update, as
    micrograd prints it), seconds per step, and the final parameters with their loss and accuracy
    on all the points."""
    params = training.params or start.params
    loss, right = fit(params, points)
    return {
        "steps": [
            {"step": r.step, "loss": r.loss, "accuracy": r.accuracy, "lr": r.lr, "seconds": r.seconds}
            for r in training.records
        ],
        "seconds_per_step": training.seconds_per_step,
        "final": {
            "step": schedule.steps,
            "loss": loss,
            "accuracy": right,
            "points": len(points),
            "engine": where,
            "gates": gates,
            "params": {name: value.tolist() for name, value in params.items()},
        },
    }


def print_summary(console: Console, result: dict[str, Any], plot: Path | None) -> None:
    final = result["final"]
    taken = len(result["steps"])
    points = f"all {final['points']} points" if final["points"] != 1 else "its 1 point"
    fitted = f"loss {final['loss']:.6g}, accuracy {percent(final['accuracy'])} on {points}"
    if not taken:
        console.print(f"nothing to do: the checkpoint is at step {final['step']} already ({fitted})", highlight=False)
        if plot is not None:
            console.print(f"decision boundary: {plot}", highlight=False)
        return
    steps = f"trained {taken} step{'s' if taken != 1 else ''}"
    if final["step"] != taken:  # resumed from a checkpoint; steps are numbered from 0, as micrograd's are
        steps += f", steps {final['step'] - taken} to {final['step'] - 1},"
    gates = f" ({final['gates']} gates)" if final["gates"] else ""  # the numpy reference has none
    console.print(
        f"{steps} on {final['engine']}{gates}: {fitted}, {result['seconds_per_step'] * 1000:.2f} ms per step",
        highlight=False,
        soft_wrap=True,
    )
    if plot is not None:
        console.print(f"decision boundary: {plot}", highlight=False)


UNIT_SCALE = 5.0
"""Coordinates beyond this are far from the moons' scale (-1.5 to 2.5), for which micrograd's
learning rate is made."""


def advice(before: float, result: dict[str, Any], points: moons.Points, batch: int, begun: int = 0) -> str:
    """What to say when the trained parameters fit all the points worse than the starting ones
    did (`before`: the init's, or a checkpoint's at step `begun`), or the data is far from unit
    scale ("" when neither, or no step was taken)."""
    final = result["final"]
    if not result["steps"]:
        return ""
    if not final["loss"] > before:
        return off_scale(points, "note: ")
    since = "before training" if begun == 0 else f"at step {begun}, the checkpoint's,"
    rose = f"the loss on all {final['points']} points rose, from {before:.6g} {since} to {final['loss']:.6g}"
    if scale := off_scale(points, ": "):
        return rose + scale
    if batch < final["points"]:
        return f"{rose}: more points a step (--batch {batch}; all {final['points']} by default) or more steps may help"
    return f"{rose}: more steps may help (at a learning rate near 1.0 the first steps can overshoot)"


def after_failure(exc: RunError | InputError, saved: Path | None, points: moons.Points) -> GatemeshError:
    """A failed training's error (the same exception, its words added to), with what was kept
    and what to do next: an overflow is told why it may have happened (resuming would overflow
    again); any other failure, where to go on from."""
    diverged = isinstance(exc, NotFinite) or (isinstance(exc, GateFailed) and exc.code == ErrorCode.DOMAIN)
    said = str(exc)
    if diverged:
        said += off_scale(points, "; ")
        if saved is not None and saved.exists():
            said += f"; {saved} has the parameters before it"
    elif saved is not None and saved.exists():
        said += f"; {saved} has the parameters of the last step it saved: the same command with --resume goes on"
    elif saved is None:
        said += "; with --checkpoint FILE, every step is saved and --resume goes on from the last one"
    exc.args = (said, *exc.args[1:])
    return exc


def off_scale(points: moons.Points, lead: str) -> str:
    """Why data far from unit scale trains badly, after `lead` ("" for data near it)."""
    low, high = float(points.X.min()), float(points.X.max())
    if max(-low, high) <= UNIT_SCALE:
        return ""
    return (
        f"{lead}micrograd's learning rate (1.0, falling to 0.1) is made for inputs of about unit scale, "
        f"and this data's coordinates run from {low:g} to {high:g}; scale them to about -2..2"
    )


def _where(engine: str, hosts: str | None, replicas: int) -> str:
    copies = f", {replicas} replicas" if replicas > 1 else ""
    if engine == "reference":
        return "the numpy reference in this process"
    if hosts is not None:
        return f"tensor gates on gate hosts{copies}"
    return f"tensor gates in this process{copies}"


@contextlib.contextmanager
def _progress(
    console: Console, total: int, done: int
) -> Iterator[tuple[Callable[[StepRecord], None], Callable[[str], None]]]:
    """A progress bar showing the step, the loss and the accuracy; yields the per-step callback,
    and one that says a line above the bar (a wait for gate hosts: silence under a bar at 0 reads
    as a hang). No bar when no step is left (a checkpoint already at the end: "5/5 loss -" would
    read as done now), and a callback that does nothing."""
    if done >= total:
        yield (lambda record: None), say_waiting
        return
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  accuracy {task.fields[accuracy]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=total, completed=done, loss="-", accuracy="-")

        def on_step(record: StepRecord) -> None:
            progress.update(
                task, completed=record.step + 1, loss=_short(record.loss), accuracy=percent(record.accuracy)
            )

        def say(line: str) -> None:
            progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

        yield on_step, say


def percent(fraction: float) -> str:
    """The fraction of points right, rounded down: 100% only when every one is (999 of 1,000 is 99%)."""
    return f"{math.floor(fraction * 100 + 1e-9)}%"


def _short(loss: float) -> str:
    """A loss for the bar: 4 decimals, as micrograd prints it, unless it has grown past reading so."""
    return f"{loss:.4f}" if abs(loss) < 1e5 else f"{loss:.3g}"


@contextlib.asynccontextmanager
async def _engine(
    kind: str,
    circuit: TensorCircuit,
    broker: str | None,
    hosts: str | None,
    placement: str,
    faults: Faults | None,
    timeout: float,
    waiting: Callable[[str], None],
) -> AsyncIterator[Engine]:
    if kind == "reference":
        yield ReferenceEngine(circuit)
    elif hosts is not None:
        address = broker_address(broker or DEFAULT_BROKER)
        placed = tensor_deploy.on_hosts(
            circuit,
            address,
            hosts=host_choice(hosts),
            placement=placement,
            timeout=timeout,
            step_timeout=timeout,
            waiting=waiting,
        )
        async with placed as engine:
            yield engine
    else:
        async with broker_url(broker) as address:
            deployed = tensor_deploy.in_process(
                circuit, address, faults=faults, ready_timeout=timeout, step_timeout=timeout
            )
            async with deployed as engine:
                yield engine
