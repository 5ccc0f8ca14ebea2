"""Median latency of one forward+backward pass of `(x+y)*z` over a warm in-process deployment.

    python -m bench.pass_latency [--passes 300] [--broker mqtt://host:port]

Without --broker it measures against both a Mosquitto it starts on loopback and the embedded
amqtt broker, one after the other in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from broker.launch import embedded, mosquitto
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.reference import evaluate

SOURCE = "(x+y)*z"
INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}


async def measure(url: str, passes: int) -> list[float]:
    circuit = compile_source(SOURCE)
    expected = evaluate(circuit, INPUTS)
    async with in_process(circuit, BrokerAddress.parse(url)) as runner:
        for _ in range(20):  # warm-up
            await runner.run(INPUTS)
        seconds = []
        for _ in range(passes):
            start = time.perf_counter()
            result = await runner.run(INPUTS)
            seconds.append(time.perf_counter() - start)
            assert result == expected, result
    return seconds


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
