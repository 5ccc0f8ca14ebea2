"""Median latency of one forward+backward pass of `(x+y)*z` over a warm in-process deployment.

    python -m bench.pass_latency [--passes 300] [--broker mqtt://host:port]

Without --broker it measures against both a Mosquitto it starts on loopback and the embedded
amqtt broker, one after the other in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bench import mesh
from broker.launch import embedded, mosquitto
from gates.transport import BrokerAddress

SOURCE = "(x+y)*z"
INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}


async def measure(url: str, passes: int) -> list[float]:
    return await mesh.pass_latency(BrokerAddress.parse(url), SOURCE, INPUTS, passes)


def report(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"{name:<12} passes={len(ms):<5} median={statistics.median(ms):.3f} ms  p90={p90:.3f} ms  min={ms[0]:.3f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--broker", default=None)
    args = parser.parse_args()
    print(f"one forward+backward pass of {SOURCE}, warm deployment, sequential passes")
    if args.broker:
        report(args.broker, await measure(args.broker, args.passes))
        return
    with mosquitto() as url:
        report("mosquitto", await measure(url, args.passes))
    async with embedded() as url:
        report("embedded", await measure(url, args.passes))


if __name__ == "__main__":
    asyncio.run(main())
