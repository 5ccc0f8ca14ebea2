"""`gatemesh serve`: the live web view (web/), on loopback unless told otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.api import broker_url
from orchestrator.cli_common import err, print_line, secure_dir
from orchestrator.errors import InputError


def serve(
    broker: Annotated[
        str | None,
        typer.Option("--broker", "-b", envvar="GATEMESH_BROKER", help="mqtt://host:port; default: the embedded broker"),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="the page's port (0: any free one)")] = 8000,
    bind: Annotated[str, typer.Option(help="the address to listen on; anything but loopback lets others drive it")] = (
        "127.0.0.1"
    ),
    hosts: Annotated[
        int, typer.Option(min=0, max=16, help="start this many gate host processes, to run on and to kill")
    ] = 0,
    secure: Annotated[
        Path | None,
        typer.Option(
            "--secure",
            help="a directory made by `gatemesh secure init`: watch with the read-only watcher's account, run "
            "with the orchestrator's, start hosts with their own, rewrite the ACL for each deployment (needs --broker)",
        ),
    ] = None,
    watch_only: Annotated[
        bool,
        typer.Option(
            "--watch-only",
            help="with --secure: read only DIR/watcher.json and only watch (the cluster, the runs others make on a "
            "deployment); everything that would publish is refused",
        ),
    ] = False,
) -> None:
    """Open the live view: watch a pass, step through its messages, break it, in the browser."""
    from broker.security import ORCHESTRATOR_USER
    from web.app import LOOPBACK_NAMES, make_app  # here: only `serve` pays for Starlette and uvicorn
    from web.rooms import Rooms
    from web.session import Session

    if watch_only and secure is None:
        raise InputError("--watch-only needs --secure DIR: the directory whose watcher.json has the read-only account")
    if watch_only and hosts:
        raise InputError("--watch-only starts no hosts: it has no account that may deploy on them")
    if secure is not None and broker is None:
        raise InputError(
            "--secure needs --broker: the embedded broker has no accounts (python -m broker mosquitto "
            "--secure DIR starts one that has)"
        )
    accounts = None if watch_only else secure_dir(secure)
    watcher = _watcher(secure)
    if accounts is not None and hosts > len(accounts.hosts()):
        raise InputError(f"--hosts {hosts}: {secure} has accounts for {len(accounts.hosts())} host(s) only")

    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise InputError(f"--bind {bind!r}: give an IP address, like 127.0.0.1") from None
    if not address.is_loopback:
        can = "watch every run on the cluster" if watch_only else "run circuits and kill the hosts this server started"
        err.print(
            f"[yellow]warning:[/yellow] --bind {bind}: anyone who can reach this address can {can}; there is no login",
            highlight=False,
        )
    listener = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((bind, port))
    except OSError as exc:
        listener.close()
        raise InputError(f"cannot listen on {bind}:{port}: {exc.strerror}; try --port 0 for any free port") from None
    listener.listen(128)
    listener.setblocking(False)
    logging.getLogger("web").setLevel(logging.INFO)

    async def main() -> None:
        import uvicorn

        stop = asyncio.current_task()
        assert stop is not None
        server: uvicorn.Server | None = None

        def on_signal() -> None:
            """Cancel while starting; once serving, let uvicorn stop (it hears the signal too): it
            closes the pages' connections first. Cancelling it then cut their handlers off mid-wait,
            and uvicorn printed each one's CancelledError as 'Exception in ASGI application'."""
            if server is None:
                stop.cancel()
            else:
                server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, on_signal)

        async with broker_url(broker) as url:
            port = listener.getsockname()[1]
            names = accounts.hosts()[:hosts] if accounts else [f"web{port}-h{i}" for i in range(1, hosts + 1)]
            watching = url
            if watcher is not None and url.username is None:  # the page itself never gets an account
                watching = url.model_copy(update={"username": watcher[0], "password": watcher[1]})
            if accounts is not None and url.username is None:  # runs, deployments, deliveries: as the orchestrator
                password = accounts.credentials()[ORCHESTRATOR_USER]
                url = url.model_copy(update={"username": ORCHESTRATOR_USER, "password": password})
            if watch_only:
                url = watching
            session = Session(url, hosts=names, secure=accounts, watcher=watching, readonly=watch_only)
            rooms = Rooms(
                session, lambda name: Session(url, secure=accounts, watcher=watching, readonly=watch_only, room=name)
            )
            async with asyncio.TaskGroup() as group:
                serving = group.create_task(rooms.serve())
                await session.ready.wait()
                host, bound = listener.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                mode = f"watch only, as {watching.username}, " if watch_only else ""
                said = f"gatemesh serve: open http://{shown}:{bound}/  (broker {url}, {mode}pid {os.getpid()})"
                print_line(said)
                config = uvicorn.Config(
                    make_app(rooms, LOOPBACK_NAMES | {bind} if address.is_loopback else None),
                    log_level="warning",
                    ws_max_size=1 << 20,
                    lifespan="off",
                    timeout_graceful_shutdown=3,
                )
                server = uvicorn.Server(config)
                try:
                    await server.serve(sockets=[listener])
                finally:
                    serving.cancel()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())


def _watcher(secure: Path | None) -> tuple[str, str] | None:
    """The read-only watcher's (user, password), read from DIR/watcher.json alone; None without --secure."""
    from broker.security import SecureDir

    if secure is None:
        return None
    try:
        return SecureDir(secure).watcher()
    except ValueError as exc:
        raise InputError(f"--secure: {exc}") from None
