"""Every command's --help reads as prose at 80 columns: paragraphs wrapped, nothing cut off."""

from __future__ import annotations

import itertools
import logging

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import _not_a_socket_error, app

WIDTH = 80


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path, its groups' too (typer carries its own click: no isinstance)."""
    found = [path]
    if isinstance(subcommands := getattr(command, "commands", None), dict):
        for name, sub in subcommands.items():
            found += _commands(sub, (*path, name))
    return found


COMMANDS = [path for path in _commands(typer.main.get_command(app)) if path[:1] != ("host",)]
"""`host` is `python -m gates`'s own argparse help (tests/integration/test_cli.py)."""


def _help(path: tuple[str, ...]) -> str:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert done.exit_code == 0, done.output
    return done.output


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "gatemesh")
def test_help_is_wrapped_at_the_terminal_width(path: tuple[str, ...]) -> None:
    """A line of the description ends early only where its paragraph ends (`run`'s docstring,
    written at 100 columns, once broke "for the length\\nof the run"), and no option's help is
    cut short with an ellipsis (`train --faults`' example once was)."""
    text = _help(path)
    assert "…" not in text
    cut = [line for line in text.splitlines() if line.rstrip().endswith("...") and not line.startswith("Usage:")]
    assert cut == []  # click cuts a command's listing short with three dots
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    description = lines[1 : next(i for i, line in enumerate(lines) if line in ("Arguments:", "Options:", "Commands:"))]
    for line, following in itertools.pairwise(description):
        if line.strip() and following.strip():
            assert len(line) + 1 + len(following.split()[0]) > WIDTH, f"{line!r} ends early, before {following!r}"


def test_pahos_socket_error_line_is_left_to_the_commands_error_line_and_nothing_else_is() -> None:
    """`gatemesh status --broker mqtt://<a TLS port>` printed paho's "ERROR mqtt: failed to receive
    on socket: [Errno 104] ..." above its own error line."""

    def said(message: str) -> bool:
        return _not_a_socket_error(logging.LogRecord("mqtt", logging.ERROR, __file__, 1, message, None, None))

    assert not said("failed to receive on socket: [Errno 104] Connection reset by peer")
    assert said("Caught exception in on_connect: boom")
