"""`gatemesh secure ...`: accounts and an ACL for Mosquitto, so each host may touch only its own gates' topics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from broker.security import WATCHER_FILE, WATCHER_USER, SecureDir, host_user
from gates.protocol import BROKER as BROKER_NODE
from gates.protocol import NAME_PATTERN, NAME_RULE, ORCHESTRATOR
from orchestrator.cli_common import print_line, secure_dir
from orchestrator.errors import InputError

BROKER = "mqtt://HOST:1883"
"""Where the printed commands say the broker is: the user puts in its host."""
HOST = "gatemesh host --name"
"""How a host is started: its password in its environment, never on its command line (`ps` shows those to all)."""
app = typer.Typer(help="Accounts and an ACL for Mosquitto: each host may touch only its own gates' topics.")


@app.command("init")
def secure_init(
    directory: Annotated[Path, typer.Argument(help="where to write credentials.json, passwd and acl")],
    hosts: Annotated[str, typer.Option("--hosts", help="the gate hosts' names: h1,h2,h3")],
    force: Annotated[
        bool, typer.Option("--force", help="over a directory with accounts: new passwords for all, an ACL with none")
    ] = False,
) -> None:
    """Make accounts for the orchestrator and each host, a password file and a first ACL."""
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names:
        raise InputError("--hosts: give the hosts' names, like h1,h2,h3")
    bad = [name for name in names if re.fullmatch(NAME_PATTERN, name) is None]
    if bad:
        raise InputError(f"--hosts: {', '.join(map(repr, bad))}: a host name must be {NAME_RULE}")
    if reserved := [name for name in names if name in (ORCHESTRATOR, BROKER_NODE)]:  # the orchestrator has its own
        named = ", ".join(map(repr, reserved))
        raise InputError(f"--hosts: {named}: {ORCHESTRATOR} and {BROKER_NODE} are not gate hosts")
    if (directory / "credentials.json").exists() and not force:
        raise InputError(
            f"{directory} has accounts already: its hosts and brokers use their passwords, and its ACL its "
            "deployments' grants; give --force to replace them all (every host then needs its new URL)"
        )
    accounts = SecureDir.create(directory, names)
    lines = [
        f"wrote {directory}/credentials.json (keep it secret), passwd and acl for {', '.join(names)}",
        "(each host's password goes in its environment, which other users cannot read, not in its command line)",
        f"broker:   python -m broker mosquitto --host 0.0.0.0 --port 1883 --secure {directory}  "
        "(every interface: for hosts on other machines)",
        *(f"host {name}: GATEMESH_BROKER={accounts.url(host_user(name), BROKER)} {HOST} {name}" for name in names),
        f"deploy:   gatemesh deploy CIRCUIT --name NAME --secure {directory} --broker mqtt://HOST:1883",
        f"watch:    gatemesh serve --broker mqtt://HOST:1883 --secure {directory} --watch-only  "
        f"(reads {WATCHER_FILE} alone: the read-only account)",
    ]
    for line in lines:
        print_line(line)


@app.command("watcher")
def secure_watcher(
    directory: Annotated[Path, typer.Argument(help="a directory made by `gatemesh secure init`")],
) -> None:
    """Add the read-only watcher account to a directory made before it existed (other passwords stay)."""
    accounts = secure_dir(directory)
    assert accounts is not None
    if not accounts.add_watcher():
        print_line(f"{directory} has the watcher account already ({directory / WATCHER_FILE})")
        return
    print_line(
        f"added the read-only account {WATCHER_USER!r} to {directory}: credentials.json, {WATCHER_FILE}, passwd and "
        "the ACL (its other rules stay); a broker started with `python -m broker mosquitto --secure` reloads them "
        "now, any other Mosquitto on SIGHUP"
    )
