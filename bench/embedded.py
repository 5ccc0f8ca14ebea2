"""The embedded broker at size: deploy and one pass of a 300- and a 1,200-gate circuit.

    python -m bench.embedded [--as-is]

`x*1 + x*2 + ... + x*N` (N products: 3N gates), deployed in this process on the embedded amqtt
broker, each gate with its own connection (what `gatemesh run` deploys) and then all on one
shared connection; one pass each, its result checked. --as-is runs amqtt 0.12 without
broker/subscriptions.py's mends, for comparison: it tries every topic filter for every message.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from broker.launch import embedded
from gates.host import Connections
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.reference import evaluate

PRODUCTS = (100, 400)
CONNECTIONS: tuple[Connections, ...] = ("per-gate", "shared")


async def one(products: int, connections: Connections, mended: bool) -> str:
    circuit = compile_source(" + ".join(f"x*{i}" for i in range(1, products + 1)))
    inputs = {"x": 1.0}
    async with embedded(mended=mended) as url:
        start = time.perf_counter()
        async with in_process(circuit, BrokerAddress.parse(url), connections=connections, ready_timeout=300) as runner:
            ready = time.perf_counter()
            result = await runner.run(inputs, timeout=300)
            done = time.perf_counter()
    assert result == evaluate(circuit, inputs), result
    return f"{len(circuit.gates):>5} gates {connections:<9} deploy {ready - start:5.1f} s   pass {done - ready:5.1f} s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-is", action="store_true", help="amqtt without gatemesh's mends")
    args = parser.parse_args()
    print("embedded amqtt broker, " + ("as it is" if args.as_is else "mended (broker/subscriptions.py)"))
    for products in PRODUCTS:
        for connections in CONNECTIONS:
            print(await one(products, connections, mended=not args.as_is), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
