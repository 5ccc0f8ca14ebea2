"""What every `gatemesh` command shares: its options, their checks, its printing, its one error path.

Options are checked in small functions that turn a bad value into an InputError naming the
option; output goes through `print_*` helpers; and every failure a user can cause leaves by
`one_error_path`: one line on stderr that says what was wrong, and exit status 1.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.security import ORCHESTRATOR_USER, SecureDir
from gates.errors import TransportError
from gates.faults import Faults
from gates.lifecycle import leaves
from gates.transport import BrokerAddress
from orchestrator.circuit import CIRCUIT_SUFFIXES, Circuit
from orchestrator.compiler import compile_program
from orchestrator.deploy import HostChoice
from orchestrator.errors import BrokerError, CompileError, GatemeshError, InputError, unwrap
from orchestrator.placement import STRATEGIES
from orchestrator.result import RunResult


class _Console(Console):
    """A rich Console that falls silent when its reader goes (`gatemesh run --explain | head`).

    rich's own raises SystemExit, and from a line told while a run is under way (a callback of
    the event loop) that tore the loop down mid-run: some 70 lines of tracebacks. This one sends
    the rest of its output to /dev/null and lets the run end as it would."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())
        os.close(devnull)


out = _Console()
err = _Console(stderr=True)


# -- options ------------------------------------------------------------------------------

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        envvar="GATEMESH_BROKER",
        help="mqtt://host:port of a running broker; default: start the embedded one",
    ),
]
ClusterBrokerOption = Annotated[
    str,
    typer.Option("--broker", "-b", envvar="GATEMESH_BROKER", help="mqtt://host:port of the broker the hosts use"),
]
FaultsOption = Annotated[
    str,
    typer.Option(
        "--faults", help="inject faults between the gates and the broker: drop=0.05,dup=0.1,delay=0-20ms,reorder,seed=7"
    ),
]
SecureOption = Annotated[
    Path | None,
    typer.Option(
        "--secure",
        help="a directory made by `gatemesh secure init`: rewrite the broker's ACL for this deployment "
        "and connect with the orchestrator's account",
    ),
]
HostsOption = Annotated[
    str | None,
    typer.Option(
        "--hosts",
        help="gate hosts to deploy on: a number (wait for that many) or names h1,h2; default: all online",
    ),
]
PlacementOption = Annotated[
    str,
    typer.Option("--placement", help=f"{' | '.join(STRATEGIES)} | a .json/.yaml file mapping gate -> host"),
]
DASH_FIRST = "(one that starts with -: give every option first, then --, then it)"
"""Said by every SOURCE argument's help: `-x` would be read as an option."""
OutputOption = Annotated[str | None, typer.Option("--output", help="the name whose value is the output")]


def check_writable(option: str, path: Path | None, suffixes: tuple[str, ...] = ()) -> None:
    """InputError now if `path` could not be written later (before a run or a training, whose
    result would be lost to a late failure)."""
    if path is None:
        return
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: write it as {', '.join(suffixes)}")
    if path.is_dir():
        raise InputError(f"{option} {path}: a directory; give the name of a file to write")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{option} {path}: cannot write in {path.parent} (missing, or not writable)")


def seconds(value: float) -> float:
    """A --timeout's check: a number of seconds above 0 (not nan, not inf)."""
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"{value:g}: give a number of seconds above 0")
    return value


RUN_TIMEOUT = 10.0
"""Seconds a command's run may take unless --timeout says otherwise."""
TimeoutOption = Annotated[
    float,
    typer.Option(
        callback=seconds,
        help="seconds to wait for a run's result; then its gates are probed (0.5 s more, and up to 5 s more "
        "for a big circuit) and it fails naming those it waits on",
    ),
]


# -- checking what was given --------------------------------------------------------------


_INPUT_VALUE = re.compile(r"\s*[A-Za-z_]\w*\s*=\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
"""`x=-2`: what an input's value looks like (a program of a single constant would, too: no one writes that)."""


def load_circuit(source: str, output: str | None = None) -> Circuit:
    """A circuit file (.json/.yaml/.yml) if SOURCE names one, else an expression or program."""
    if source.lower().endswith(CIRCUIT_SUFFIXES):
        circuit = Circuit.load(Path(source))
        if output is not None and output != circuit.output:
            raise InputError("--output applies to expressions; a circuit file names its own output")
        return circuit
    suffixes = ", ".join(CIRCUIT_SUFFIXES)
    if source.lower().endswith(".jsonl") and _names_a(source, Path.is_file):
        raise InputError(f"{source}: a trace, not a circuit; `gatemesh draw circuit --trace {source}` draws it")
    if source.lower().endswith(".jsonl"):  # not an expression either: `run.jsonl` would read as run.jsonl's attribute
        raise InputError(f"{source}: no such file (and a .jsonl file is a trace; a circuit's file ends in {suffixes})")
    if ("/" in source or "." in source) and _names_a(source, Path.is_file):  # `a/b` is an expression too
        raise InputError(f"{source}: a circuit file's name ends in {suffixes}")
    if ("/" in source or "." in source) and _names_a(source, Path.is_dir):
        raise InputError(f"{source}: a directory; give a circuit file ({suffixes}) or an expression")
    if _INPUT_VALUE.fullmatch(source):  # `gatemesh run x=-2 y=5`: the expression left out
        value = "".join(source.split())  # as a value is given: `x = 2` with spaces is refused
        raise InputError(
            f"{source} reads as an input's value, and there is no expression before it: "
            f'give the expression first, then the values: "(x+y)*z" {value}'
        )
    try:
        return compile_warned(source, output=output)
    except CompileError as exc:
        if re.fullmatch(r"[\w./~-]*\.[A-Za-z]\w*", source):  # neuron.jsn: a file name, mistyped
            raise InputError(f"{source}: no such circuit file (its name would end in {suffixes}); {exc}") from exc
        raise


def compile_warned(source: str, *, output: str | None = None, name: str = "circuit") -> Circuit:
    """compile_source, saying on stderr what of the source the circuit leaves out."""
    compiled = compile_program(source, output=output, name=name)
    for warning in compiled.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    return compiled.circuit


def _names_a(name: str, kind: Callable[[Path], bool]) -> bool:
    """Whether `name` names a path of this kind, a file or a directory (a long expression is too
    long a name to ask about)."""
    try:
        return kind(Path(name))
    except (OSError, ValueError):
        return False


SPACED = "give each input as name=value, with no spaces around '=' (the shell splits x = -2 into three words)"


def is_assignment(word: str) -> bool:
    """`x=-2`: a name, then '=' (a program's `q = x + y` has spaces: the shell gave it as one word)."""
    name, sep, _ = word.partition("=")
    return bool(sep) and unicodedata.normalize("NFKC", name).isidentifier()


def parse_assignments(assignments: list[str]) -> dict[str, float]:
    """['x=-2', 'y=5'] -> {'x': -2.0, 'y': 5.0}, with errors that name the bad argument."""
    values: dict[str, float] = {}
    if any(text.startswith("=") for text in assignments):  # `x = 2` after `--` (main() mends it before)
        raise InputError(SPACED)
    for text in assignments:
        name, sep, number = text.partition("=")
        name = unicodedata.normalize("NFKC", name)  # as Python reads the names of an expression
        if not sep or not name.strip():
            raise InputError(f"{text!r}: give inputs as name=value, like x=-2")
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"{text!r}: {number!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{text!r}: the value must be finite")
        if name.strip() in values:
            raise InputError(f"{text!r}: {name.strip()} is given twice")
        values[name.strip()] = value
    return values


def parse_faults(text: str) -> Faults | None:
    """--faults: None when empty."""
    if not text:
        return None
    try:
        return Faults.parse(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def broker_address(url: str, accounts: SecureDir | None = None) -> BrokerAddress:
    """The broker's address; with a secure directory and no user in the URL, as the orchestrator."""
    try:
        address = BrokerAddress.parse(url)
        address.tls_context()  # a CA file that cannot be read: said before connecting
    except ValueError as exc:
        raise BrokerError(str(exc)) from exc
    if accounts is not None and address.username is None:
        credentials = accounts.credentials()
        address = address.model_copy(update={"username": ORCHESTRATOR_USER, "password": credentials[ORCHESTRATOR_USER]})
    return address


def secure_dir(directory: Path | None) -> SecureDir | None:
    """--secure: a directory with readable credentials, or None."""
    if directory is None:
        return None
    accounts = SecureDir(directory)
    try:
        accounts.credentials()
    except ValueError as exc:
        raise InputError(f"--secure: {exc}; make one with `gatemesh secure init`") from exc
    return accounts


def host_choice(hosts: str | None) -> HostChoice:
    """--hosts: a number of hosts to wait for, or their names."""
    if hosts is None:
        return None
    if hosts.strip().lstrip("+-").isdigit():  # "-2" is a number too small, not a host's name
        count = int(hosts)
        if count < 1:
            raise InputError("--hosts: give at least 1")
        return count
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names:
        raise InputError("--hosts: give a number or host names like h1,h2")
    return names


# -- output -------------------------------------------------------------------------------


def print_result(result: RunResult, title: str | None = None, given: Sequence[str] = ()) -> None:
    """The value in bold, then one row per input with its gradient: the inputs `given` in the
    order they were given (x=3 y=-4), then the rest in the circuit's."""
    out.print(f"value = [bold]{result.value:.10g}[/bold]")
    if not result.grads:
        out.print("(no inputs: no gradients)")
        return
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("input")
    table.add_column("gradient", justify="right")
    for name in dict.fromkeys([*(n for n in given if n in result.grads), *result.grads]):
        table.add_row(name, f"{result.grads[name]:.10g}")
    out.print(table)


def say_waiting(said: str) -> None:
    """A wait the user should know of (for hosts to come online), on stderr."""
    err.print(said, highlight=False, markup=False, soft_wrap=True)


def print_line(line: str, *, console: Console = out) -> None:
    """One line as it is: no markup, no highlighting, no emoji codes, no wrapping; a reader that
    goes (`| head`) silences the rest rather than failing the command (_Console), JSON too."""
    console.print(line, highlight=False, markup=False, emoji=False, soft_wrap=True)


# -- the one error path -------------------------------------------------------------------


def fail(exc: GatemeshError | TransportError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise SystemExit(1) from None


@contextlib.contextmanager
def one_error_path() -> Iterator[None]:
    """A gatemesh error or a broken broker connection, bare or inside a task group's failure,
    becomes one line on stderr and exit 1."""
    try:
        yield
    except (GatemeshError, TransportError) as exc:
        fail(exc)
    except BaseExceptionGroup as group:
        cause = unwrap(group)
        if isinstance(cause, GatemeshError):
            fail(cause)
        lost = next((e for e in leaves(group) if isinstance(e, TransportError)), None)
        if lost is None:
            raise
        fail(lost)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
