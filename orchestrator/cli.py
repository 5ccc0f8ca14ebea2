"""`gatemesh`: compile expressions into circuits of gate actors and run them over MQTT.

The root of the command line: it makes the app and registers each group of commands, which
live beside it: `cli_run` (run, compile, demo), `cli_cluster` (host, deploy, undeploy,
status), `cli_secure` (secure ...), with what they share in `cli_common`.
"""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from typing import Any

import typer

from orchestrator import cli_cluster, cli_run, cli_secure, cli_train
from orchestrator.cli_common import one_error_path
from orchestrator.cli_draw import draw_app, export_app
from orchestrator.cli_serve import serve

app = typer.Typer(
    help="Backpropagation as a distributed system: every gate an actor, every value an MQTT message.",
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
    args = sys.argv[1:]
    taken = _expression_taken_for_an_option(args)
    if taken is not None:
        mended = shlex.join(["gatemesh", *args[:taken], f"({args[taken]})", *args[taken + 1 :]])
        print(
            f"error: {args[taken]} reads as an option; put an expression that starts with '-' in parentheses: {mended}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    misread = _inputs_misread(args)
    if misread is not None:
        print(f"error: {misread}", file=sys.stderr)
        raise SystemExit(2)
    with one_error_path():
        app()


def _inputs_misread(args: list[str]) -> str | None:
    """Input values the option parser would misread (before any `--`): `x = -2`, three words
    to the shell, or `-2` without its name, which the parser would call "No such option: -2"."""
    words = args[: args.index("--")] if "--" in args else args
    if any(word == "=" or (word.endswith("=") and not word.startswith("-")) for word in words):
        mended = shlex.join(["gatemesh", *_joined(words), *args[len(words) :]])
        spaces = "with no spaces around '=' (the shell splits x = -2 into three words)"
        return f"give each input as name=value, {spaces}: {mended}"
    for before, word in zip(["", *words], words, strict=False):
        after_option = before.startswith("-") and before not in _flags()  # `--timeout -1`: its value
        if _is_number(word) and word.startswith("-") and not after_option:
            return f"{word} reads as an option: give each input with its name, as name=value, like x={word}"
    return None


def _joined(words: list[str]) -> list[str]:
    """`x = -2`, `x= -2` and `x =-2` as `x=-2`."""
    out: list[str] = []
    for word in words:
        if out and (word.startswith("=") or out[-1].endswith("=")) and not out[-1].startswith("-"):
            out[-1] += word
        else:
            out.append(word)
    return out


def _expression_taken_for_an_option(args: list[str]) -> int | None:
    """Where an expression such as `-x*y`, `-x` or `-(x+y)` comes before any `--`: the option
    parser would say "No such option: -x". Negative numbers (an option's value) and the
    short options themselves (`-o FILE`, `-ofile`) are left to the parser."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if not arg.startswith("-") or arg.startswith("--") or len(arg) < 2 or _is_number(arg):
            continue
        if arg[:2] in _short_options():  # `-o FILE`, `-ofile`, `-bmqtt://h:1883`
            continue
        return i
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@functools.cache
def _flags() -> frozenset[str]:
    """Every option, long or short, that takes no value (`--explain`, `--json`)."""
    return frozenset(
        name
        for param in _every_param()
        if getattr(param, "is_flag", False) or getattr(param, "count", False)
        for name in (*param.opts, *param.secondary_opts)
    )


def _every_param() -> list[Any]:
    """Every parameter of every command (click's, as typer carries it)."""
    found: list[Any] = []
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        found.extend(command.params)
        commands.extend(getattr(command, "commands", {}).values())
    return found


@functools.cache
def _short_options() -> frozenset[str]:
    """Every one-letter option of every command (`-b`, `-o`)."""
    return frozenset(
        o
        for param in _every_param()
        for o in (*param.opts, *param.secondary_opts)
        if o.startswith("-") and not o.startswith("--")
    )
