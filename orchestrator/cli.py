"""`gatemesh`: compile expressions into circuits of gate actors and run them over MQTT.

The root of the command line: it makes the app and registers each group of commands, which
live beside it: `cli_run` (run, compile, demo), `cli_cluster` (host, deploy, undeploy,
status), `cli_train` (train), `cli_secure` (secure ...), `cli_draw` (draw ..., export ...) and
`cli_serve` (serve), with what they share in `cli_common`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from orchestrator import cli_cluster, cli_run, cli_secure, cli_train
from orchestrator.circuit import CIRCUIT_SUFFIXES
from orchestrator.cli_common import SPACED, is_assignment, one_error_path
from orchestrator.cli_draw import draw_app, export_app
from orchestrator.cli_serve import serve

EXIT_STATUSES = (
    "Exit status: 0 done; 1 the command failed and its one error line says why (a bad circuit, "
    "input, value or file, options that do not go together, a run that failed or timed out, a "
    "broker that cannot be reached); 2 the command line cannot be read (an unknown option, a "
    "missing argument, a number outside its option's range); 130 interrupted (Ctrl-C; "
    "`serve` and `host` run until stopped, and stop with 0)."
)

app = typer.Typer(
    help="Backpropagation as a distributed system: every gate an actor, every value an MQTT message.",
    epilog=EXIT_STATUSES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cli_run.register(app)
cli_cluster.register(app)
cli_train.register(app)
app.add_typer(cli_secure.app, name="secure")
app.add_typer(draw_app, name="draw")
app.command("serve")(serve)
app.add_typer(export_app, name="export")


def _short_helps(commands: typer.Typer) -> None:
    """Each command's first paragraph as its short help: click cuts a command's help to fit a
    listing ("Run one forward and backward pass through the broker and..."), a short help it wraps."""
    for command in commands.registered_commands:
        if command.short_help is None and command.callback is not None:
            told = command.help if isinstance(command.help, str) else command.callback.__doc__
            command.short_help = _first_paragraph(told)
    for group in commands.registered_groups:
        if group.typer_instance is None:
            continue
        told = group.help if isinstance(group.help, str) else group.typer_instance.info.help
        if not isinstance(group.short_help, str):
            group.short_help = _first_paragraph(told if isinstance(told, str) else None)
        _short_helps(group.typer_instance)


def _first_paragraph(text: str | None) -> str | None:
    return " ".join(text.strip().split("\n\n")[0].split()) if text else None


_short_helps(app)


def main() -> None:
    """Entry point: gatemesh errors become one clear line on stderr and exit status 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mqtt").addFilter(_not_a_socket_error)
    args = sys.argv[1:]
    taken = _expression_taken_for_an_option(args)
    if taken is not None:
        word = args[taken]
        if word.lower().endswith((*CIRCUIT_SUFFIXES, ".jsonl")) or Path(word).is_file():  # a file: not an expression
            mended = shlex.join(["gatemesh", *args[:taken], f"./{word}", *args[taken + 1 :]])
            said = f"{word} reads as an option; give a file whose name starts with '-' by its path: {mended}"
        else:
            mended = shlex.join(["gatemesh", *args[:taken], f"({word})", *args[taken + 1 :]])
            said = f"{word} reads as an option; put an expression that starts with '-' in parentheses: {mended}"
        print(f"error: {said}", file=sys.stderr)
        raise SystemExit(2)
    misread = _inputs_misread(args)
    if misread is not None:
        print(f"error: {misread}", file=sys.stderr)
        raise SystemExit(2)
    with one_error_path():
        app()


def _not_a_socket_error(record: logging.LogRecord) -> bool:
    """paho's own line for a broken socket ("failed to receive on socket: [Errno 104] ..."): the
    command's error line says what it means, naming the broker; the rest of the "mqtt" log stays."""
    return not record.getMessage().startswith("failed to receive on socket")


INPUT_COMMANDS = (("run",), ("draw", "circuit"), ("draw", "lamport"))
"""The commands that take a source and input values (name=value)."""
SOURCE_COMMANDS = (*INPUT_COMMANDS, ("compile",), ("deploy",))
"""The commands that take a source."""


def _inputs_misread(args: list[str]) -> str | None:
    """Input values the option parser would misread (before any `--`): `x = -2`, three words
    to the shell, or `-2` without its name, which the parser would call "No such option: -2";
    a source `-2` is told to go in parentheses, as `-x` is."""
    command = next((c for c in SOURCE_COMMANDS if tuple(args[: len(c)]) == c), None)
    if command is None:
        return None
    inputs = command in INPUT_COMMANDS
    rest = args[len(command) :]
    words = rest[: rest.index("--")] if "--" in rest else rest
    at = _positionals(words, _flags(command))
    if not at:
        return None
    source = at[0] if not is_assignment(words[at[0]]) else None
    joined = _joined(words, at) if inputs else words
    if joined != words:
        mended = shlex.join(["gatemesh", *command, *joined, *rest[len(words) :]])
        return f"{SPACED}: {mended}"
    for i in at:
        word = words[i]
        if not (_is_number(word) and word.startswith("-")):
            continue
        if i == source:
            mended = shlex.join(["gatemesh", *args[: len(command) + i], f"({word})", *rest[i + 1 :]])
            return f"{word} reads as an option; put an expression that starts with '-' in parentheses: {mended}"
        if inputs:
            return f"{word} reads as an option; give each input with its name, as name=value, like x={word}"
    return None


def _positionals(words: list[str], flags: frozenset[str]) -> list[int]:
    """Where the words the user meant as arguments are (a negative number among them): not
    options, nor the value after an option that takes one (`--timeout 1`, `-o out=`)."""
    at: list[int] = []
    value_next = False
    for i, word in enumerate(words):
        if value_next:
            value_next = False
        elif word.startswith("--"):
            value_next = _takes_a_value(word, flags)
        elif word.startswith("-") and not _is_number(word):
            value_next = len(word) == 2 and word not in flags  # `-ofile` carries its value
        else:
            at.append(i)
    return at


def _takes_a_value(word: str, flags: frozenset[str]) -> bool:
    """Whether `word` is an option whose value is the next word (`--timeout=1` and `-ofile` carry their own)."""
    if word.startswith("--"):
        return "=" not in word and word not in flags
    return word in _short_options() and word not in flags


def _joined(words: list[str], at: list[int]) -> list[str]:
    """The words with `x = -2`, `x =-2` and `x= -2` (of the arguments at `at`) as `x=-2`; an
    `x=` with no number after it is left as it is (its missing value is said when it is read)."""
    out = list(words)
    for i, j in reversed(list(itertools.pairwise(at))):
        left, right = out[i], out[j]
        if j != i + 1:
            continue
        # a name before the '=' (or a bare '=', which the name before it joins next): `'x*2+y' =5` is no input
        named = left.isidentifier() and right.startswith("=")
        valued = left.endswith("=") and _is_number(right) and (left == "=" or left[:-1].isidentifier())
        if named or valued:
            out[i : j + 1] = [left + right]
    return out


LONG_OPTION = re.compile(r"--[A-Za-z][\w-]*(=.*)?", re.DOTALL)
"""What may be a long option (`--timeout`, `--timeout=1`): `--x` too; `---x` or `--2` is an expression."""


def _expression_taken_for_an_option(args: list[str]) -> int | None:
    """Where an expression such as `-x*y`, `-x` or `-(x+y)` comes before any `--`: the option
    parser would say "No such option: -x". Negative numbers (an option's value) and the
    short options themselves (`-o FILE`, `-ofile`) are left to the parser."""
    path = _command_path(args)
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if not arg.startswith("-") or len(arg) < 2 or _is_number(arg) or LONG_OPTION.fullmatch(arg):
            continue
        if arg[:2] in _short_options():  # `-o FILE`, `-ofile`, `-bmqtt://h:1883`
            continue
        before = args[i - 1] if i > len(path) else ""
        if _takes_a_value(before, _flags(path)):
            continue  # `--name -x`: the option's value, which the command judges (a name is no expression)
        return i
    return None


def _command_path(args: list[str]) -> tuple[str, ...]:
    """The command the arguments name (`("draw", "lamport")`), as far as they name one."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    for arg in args:
        commands = getattr(command, "commands", None)
        if not commands or arg not in commands:
            break
        command = commands[arg]
        path.append(arg)
    return tuple(path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@functools.cache
def _flags(path: tuple[str, ...]) -> frozenset[str]:
    """The options of command `path` (`("draw", "circuit")`) that take no value (`--explain`)."""
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return frozenset(
        name
        for param in command.params
        if getattr(param, "is_flag", False) or getattr(param, "count", False)
        for name in (*param.opts, *param.secondary_opts)
    )


@functools.cache
def _short_options() -> frozenset[str]:
    """Every one-letter option of every command (`-b`, `-o`)."""
    found: set[str] = set()
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        for param in command.params:
            found.update(
                o for o in (*param.opts, *param.secondary_opts) if o.startswith("-") and not o.startswith("--")
            )
        commands.extend(getattr(command, "commands", {}).values())
    return frozenset(found)
