"""`python -m broker embedded|mosquitto [--port N] [--host H]`: run a broker in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path

from broker.launch import mosquitto, serve_embedded


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("kind", choices=["embedded", "mosquitto"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--secure", type=Path, default=None, help="mosquitto only: a `gatemesh secure init` directory")
    args = parser.parse_args()
    # a service manager stops with SIGTERM: unwind as for Ctrl-C, so a Mosquitto child stops too
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    with contextlib.suppress(KeyboardInterrupt):
        if args.kind == "embedded":
            asyncio.run(serve_embedded(args.port, args.host))
        else:
            with mosquitto(args.port or None, args.host, secure_dir=args.secure) as url:
                print(url, flush=True)
                while True:
                    time.sleep(3600)


if __name__ == "__main__":
    main()
