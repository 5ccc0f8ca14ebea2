"""`python -m gates --broker URL [--name NAME]`: run a gate host until SIGINT or SIGTERM.

This parser is the one definition of a host's options: `gatemesh host` hands it its arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from gates.errors import NotAuthorised
from gates.faults import Faults
from gates.host import GateHost, HostNameTaken, PresenceRefused, default_name
from gates.lifecycle import cancel_until_done
from gates.mqtt311 import QoS
from gates.transport import DEFAULT_BROKER, BrokerAddress

STOP_GRACE = 1.5
"""Seconds a stopping host gets (to say goodbye) before it is cancelled again."""


async def run_host(host: GateHost) -> None:
    """Serve until SIGTERM or SIGINT cancels the host, which then announces it stopped (the
    cancellation goes on out of the event loop: `main` takes it for the host's normal end)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # cancelled again after STOP_GRACE if it lingers
        loop.add_signal_handler(signum, cancel_until_done, task, STOP_GRACE)
    await host.serve()


def parser(prog: str = "python -m gates") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a gate host until SIGINT or SIGTERM.")
    parser.add_argument(
        "--broker",
        default=os.environ.get("GATEMESH_BROKER", DEFAULT_BROKER),
        help="mqtt://host:port of the broker (default: $GATEMESH_BROKER or %(default)s)",
    )
    parser.add_argument("--name", default=None, help="this host's name (default: host-<hostname>-<pid>)")
    parser.add_argument(
        "--faults", default="", help="inject faults into this host's gates, e.g. drop=0.05,dup=0.1,delay=0-20ms,reorder"
    )
    parser.add_argument(
        "--connections",
        choices=["shared", "per-gate"],
        default="shared",
        help="one MQTT connection for all this host's gates (default), or one per gate",
    )
    parser.add_argument(
        "--qos",
        type=int,
        choices=[0, 1],
        default=1,
        help="1: every gate message at least once (default); 0: at most once (shared connections only)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m gates") -> None:
    args = parser(prog).parse_args(argv)
    # force: under `gatemesh host` the orchestrator's CLI has configured logging already
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    try:
        faults = Faults.parse(args.faults) if args.faults else None
        address = BrokerAddress.parse(args.broker)
        address.tls_context()  # a CA file that cannot be read: said now, not retried forever
        qos: QoS = 0 if args.qos == 0 else 1
        name = default_name() if args.name is None else args.name  # "" is no name: refused, not replaced
        host = GateHost(name, address, faults=faults, connections=args.connections, qos=qos)
        with contextlib.suppress(asyncio.CancelledError):  # stopped by a signal: exit status 0
            asyncio.run(run_host(host))
    except (ValueError, HostNameTaken, PresenceRefused) as exc:  # an invalid --name (InvalidHostName) among them
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except NotAuthorised as exc:
        print(f"error: {exc}; check the user name and password in --broker (or $GATEMESH_BROKER)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
