"""`python -m broker embedded|mosquitto [--port N] [--host H]`: run a broker in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from broker.launch import BrokerStartError, mosquitto_process, serve_embedded


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("kind", choices=["embedded", "mosquitto"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--secure", type=Path, default=None, help="mosquitto only: a `gatemesh secure init` directory")
    args = parser.parse_args()
    if args.kind == "embedded" and args.secure is not None:
        parser.error("--secure applies to mosquitto only: the embedded broker has no accounts")
    # a service manager stops with SIGTERM: unwind as for Ctrl-C, so a Mosquitto child stops too
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    with contextlib.suppress(KeyboardInterrupt):
        try:
            if args.kind == "embedded":
                asyncio.run(serve_embedded(args.port, args.host))
            else:
                with mosquitto_process(args.port or None, args.host, secure_dir=args.secure) as (url, process):
                    print(url, flush=True)
                    code = process.wait()
                print(f"error: mosquitto exited with status {code}", file=sys.stderr)
                raise SystemExit(1)
        except BrokerStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
