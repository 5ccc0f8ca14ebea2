"""What tracing costs: a pass with clocks on its messages and every event recorded, vs. a plain pass.

    python -m bench.tracing [--passes 300] [--broker mqtt://host:port]

One in-process deployment (per-gate connections, then one shared connection), two runners on
it: a plain one and one with a Recorder (orchestrator/recorder.py). They take turns in blocks of
50 sequential passes, so both see the same machine at the same time; every result is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.mesh import NEURON, NEURON_INPUTS, QF, QF_INPUTS
from broker.launch import mosquitto
from gates.host import Connections
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.recorder import Recorder
from orchestrator.reference import evaluate
from orchestrator.runner import Runner, open_runner

BLOCK = 50
CONNECTIONS: tuple[Connections, ...] = ("per-gate", "shared")


async def _block(runner: Runner, inputs: dict[str, float], passes: int, samples: list[float]) -> None:
    expected = evaluate(runner.circuit, inputs)
    for _ in range(passes):
        start = time.perf_counter()
        result = await runner.run(inputs)
        samples.append(time.perf_counter() - start)
        assert result == expected, result


async def traced_vs_plain(
    broker: BrokerAddress, source: str, inputs: dict[str, float], passes: int, connections: Connections
) -> tuple[list[float], list[float]]:
    """(plain pass seconds, traced pass seconds), measured in alternating blocks on one deployment."""
    circuit = compile_source(source)
    plain: list[float] = []
    traced: list[float] = []
    async with in_process(circuit, broker, connections=connections) as runner:
        recorder = Recorder()
        async with open_runner(circuit, runner.deployment, broker, recorder=recorder) as tracing:
            await _block(runner, inputs, 20, [])  # warm-up, both ways
            await _block(tracing, inputs, 20, [])
            while len(plain) < passes:
                await _block(runner, inputs, BLOCK, plain)
                recorder.clear()  # memory stays flat; each block's events are complete
                await _block(tracing, inputs, BLOCK, traced)
            await recorder.drain()
    return plain, traced


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--broker", default=None)
    args = parser.parse_args()

    async def measure(url: str) -> None:
        broker = BrokerAddress.parse(url)
        for source, inputs in ((QF, QF_INPUTS), (NEURON, NEURON_INPUTS)):
            for connections in CONNECTIONS:
                plain, traced = await traced_vs_plain(broker, source, inputs, args.passes, connections)
                ratio = median_ms(traced) / median_ms(plain)
                verdict = "met" if ratio <= 1.5 else "not met"
                print(
                    f"{source:<28} {connections:<9} plain {median_ms(plain):.3f} ms  traced {median_ms(traced):.3f} ms"
                    f"  ratio {ratio:.2f} (target <= 1.5: {verdict})"
                )

    if args.broker:
        await measure(args.broker)
        return
    with mosquitto() as url:
        await measure(url)


if __name__ == "__main__":
    asyncio.run(main())
