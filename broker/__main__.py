"""`python -m broker embedded|mosquitto [--port N] [--host H] [--data-dir D] [--secure DIR] [--tls CA CERT KEY]`:
run a broker in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from broker.launch import BrokerStartError, TlsFiles, mosquitto_process, serve_embedded


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("kind", choices=["embedded", "mosquitto"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--secure", type=Path, default=None, help="mosquitto only: a `gatemesh secure init` directory")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="mosquitto only: keep the retained state (hosts, deployments) here, so that a restart with the "
        "same directory loses nothing; default: a temporary directory, gone when the broker stops",
    )
    parser.add_argument(
        "--tls",
        nargs=3,
        type=Path,
        metavar=("CA", "CERT", "KEY"),
        default=None,
        help="mosquitto only: speak TLS alone, with this server certificate and key, signed by CA (PEM files); "
        "clients connect with mqtts://HOST:PORT?ca=CA",
    )
    args = parser.parse_args()
    if args.kind == "embedded" and args.tls is not None:
        parser.error("--tls applies to mosquitto only")
    tls = TlsFiles(*(path.resolve() for path in args.tls)) if args.tls is not None else None
    if tls is not None:
        unreadable = [str(path) for path in (tls.ca, tls.cert, tls.key) if not path.is_file()]
        if unreadable:
            parser.error(f"--tls: no such file: {', '.join(unreadable)}")
    if args.kind == "embedded" and args.secure is not None:
        parser.error("--secure applies to mosquitto only: the embedded broker has no accounts")
    if args.kind == "embedded" and args.data_dir is not None:
        parser.error("--data-dir applies to mosquitto only: the embedded broker keeps its state in memory")
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    # a service manager stops with SIGTERM: unwind as for Ctrl-C, so a Mosquitto child stops too
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    with contextlib.suppress(KeyboardInterrupt):
        try:
            if args.kind == "embedded":
                asyncio.run(serve_embedded(args.port, args.host))
            else:
                started = mosquitto_process(
                    args.port or None, args.host, data_dir=args.data_dir, secure_dir=args.secure, tls=tls
                )
                with started as (url, process):
                    print(url, flush=True)
                    if args.data_dir is None:
                        print(
                            "note: without --data-dir the hosts' and deployments' retained state is lost when "
                            "this broker stops",
                            file=sys.stderr,
                            flush=True,
                        )
                    code = process.wait()
                print(f"error: mosquitto exited with status {code}", file=sys.stderr)
                raise SystemExit(1)
        except BrokerStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
