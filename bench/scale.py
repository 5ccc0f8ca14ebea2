"""One scale point in a fresh process: `python -m bench.scale wide 10000 --broker URL`, or `mlp`.

Prints the ScalePoint as JSON. A fresh process per point, because memory an earlier point
freed would absorb a later deployment without the resident set growing, and the later point
would look smaller than it is.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from bench.mesh import ScalePoint, scale_point, wide_circuit
from bench.mlp import mlp_circuit
from gates.transport import BrokerAddress


async def measure_in_subprocess(url: str, kind: str, gates: int = 0) -> ScalePoint:
    """Run one point in a child process and read its result."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scale", kind, str(gates), "--broker", url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"scale point {kind} {gates} failed (exit status {child.returncode})")
    return ScalePoint(**json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("kind", choices=["wide", "mlp"])
    parser.add_argument("gates", type=int, nargs="?", default=0, help="for wide: about how many gates")
    parser.add_argument("--broker", required=True)
    args = parser.parse_args()
    circuit = mlp_circuit() if args.kind == "mlp" else wide_circuit(args.gates)
    point = asyncio.run(scale_point(BrokerAddress.parse(args.broker), circuit))
    print(json.dumps(dataclasses.asdict(point)))


if __name__ == "__main__":
    main()
