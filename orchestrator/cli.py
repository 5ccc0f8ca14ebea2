"""`gatemesh`: compile expressions into circuits of gate actors and run them over MQTT.

The root of the command line: it makes the app and registers each group of commands, which
live beside it: `cli_run` (run, compile, demo), `cli_cluster` (host, deploy, undeploy,
status), `cli_secure` (secure ...), with what they share in `cli_common`.
"""

from __future__ import annotations

import logging
import shlex
import sys

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
)
cli_run.register(app)
cli_cluster.register(app)
cli_train.register(app)
app.add_typer(cli_secure.app, name="secure")
app.add_typer(draw_app, name="draw")
app.command("serve")(serve)
app.add_typer(export_app, name="export")


def main() -> None:
    """Entry point: gatemesh errors become one clear line on stderr and exit status 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:]
    taken = _expression_taken_for_an_option(args)
    if taken is not None:
        mended = shlex.join(["gatemesh", *args[:taken], "--", *args[taken:]])
        print(
            f"error: {args[taken]} reads as an option; put -- before an expression that starts with '-': {mended}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    with one_error_path():
        app()


def _expression_taken_for_an_option(args: list[str]) -> int | None:
    """Where `-x*y` or `-(x+y)` comes before any `--`: the option parser would say "No such
    option: -x"."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg.startswith("-") and not arg.startswith("--") and any(c in arg for c in "*+/()"):
            return i
    return None
