"""Gate hosts as separate processes: deploy-to-ready time, and pass latency across hosts.

    python -m bench.hosts [--repeats 7] [--passes 300]
    python -m bench.hosts --big [N] [--hosts 3] [--passes 3] [--page]    # 65,000 gates on hosts: bench/big.py

Starts a Mosquitto on loopback and three `python -m gates` processes, then measures, in one
run against that one broker:

1. deploy-to-ready: `deploy_to_hosts` of a 100-gate circuit over the three hosts, from the
   call until every gate has said Ready (the CLI adds its ~0.8 s of Python start-up);
2. one forward+backward pass of `(x+y)*z` with its 5 gates spread round-robin over the three
   host processes, against the same circuit with every gate in this process, alternating
   blocks of passes so that drift hits both alike. Every result is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

from bench import big, mesh
from broker.launch import mosquitto
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, in_process, on_deployment, undeploy
from orchestrator.reference import evaluate
from orchestrator.runner import Runner

SOURCE = "(x+y)*z"
INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}
BLOCK = 50


def hundred_gates() -> Circuit:
    """sigmoid(sum of 20 tanh(w_i * x_i)): 40 inputs, 20 mul, 20 tanh, 19 add, 1 sigmoid."""
    terms = " + ".join(f"tanh(w{i} * x{i})" for i in range(20))
    circuit = compile_source(f"f = sigmoid({terms})", name="hundred")
    assert len(circuit.gates) == 100, len(circuit.gates)
    return circuit


async def deploy_times(broker: BrokerAddress, hosts: list[str], repeats: int) -> list[float]:
    circuit = hundred_gates()
    inputs = {name: 0.1 * (i % 7) - 0.3 for i, name in enumerate(circuit.inputs)}
    seconds = []
    for _ in range(repeats):
        name = f"bench-{secrets.token_hex(3)}"
        start = time.perf_counter()
        await deploy_to_hosts(circuit, name, broker, hosts=hosts)
        seconds.append(time.perf_counter() - start)
        async with on_deployment(name, broker) as runner:
            assert await runner.run(inputs) == evaluate(circuit, inputs)
        await undeploy(name, broker)
        await asyncio.sleep(0.5)  # let the hosts stop the gates before the next round
    return seconds


async def timed_passes(runner: Runner, count: int, into: list[float]) -> None:
    expected = evaluate(runner.circuit, INPUTS)
    for _ in range(count):
        start = time.perf_counter()
        result = await runner.run(INPUTS)
        into.append(time.perf_counter() - start)
        assert result == expected, result


async def pass_latency(broker: BrokerAddress, hosts: list[str], passes: int) -> tuple[list[float], list[float]]:
    circuit = compile_source(SOURCE)
    name = f"bench-qf-{secrets.token_hex(3)}"
    record = await deploy_to_hosts(circuit, name, broker, hosts=hosts)
    assert len(set(record.placement.values())) == 3
    spread: list[float] = []
    local: list[float] = []
    try:
        async with on_deployment(name, broker) as across, in_process(circuit, broker) as alone:
            await timed_passes(across, 20, [])  # warm-up
            await timed_passes(alone, 20, [])
            for _ in range(max(1, passes // BLOCK)):
                await timed_passes(across, BLOCK, spread)
                await timed_passes(alone, BLOCK, local)
    finally:
        await undeploy(name, broker)
    return spread, local


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p10, p90 = ms[int(0.1 * (len(ms) - 1))], ms[int(0.9 * (len(ms) - 1))]
    return f"median {statistics.median(ms):8.2f} ms   p10 {p10:8.2f} ms   p90 {p90:8.2f} ms   n={len(ms)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--passes", type=int, default=None, help="default: 300, or 3 with --big")
    parser.add_argument(
        "--big", type=int, nargs="?", const=0, default=None, metavar="N", help="bench/big.py: the MLP, or N gates"
    )
    parser.add_argument("--hosts", type=int, default=3, help="host processes for --big")
    parser.add_argument("--page", action="store_true", help="with --big: a pass from `gatemesh serve`'s page too")
    args = parser.parse_args()
    if args.big is not None:
        big.run(args.hosts, args.big, args.passes or 3, args.page)
        return
    with mosquitto() as url, mesh.host_processes(url, 3, "per-gate") as names:
        asyncio.run(small(url, names, args.repeats, args.passes or 300))


async def small(url: str, names: list[str], repeats: int, passes: int) -> None:
    broker = BrokerAddress.parse(url)
    await mesh.wait_online(broker, names)
    print(f"broker {url}; hosts {', '.join(names)} (separate processes)")
    deploys = await deploy_times(broker, names, repeats)
    print(f"deploy 100 gates over 3 hosts, to ready: {summary(deploys)}")
    spread, local = await pass_latency(broker, names, passes)
    print(f"pass of {SOURCE}, gates over 3 hosts:    {summary(spread)}")
    print(f"pass of {SOURCE}, gates in one process:  {summary(local)}")
    ratio = statistics.median(spread) / statistics.median(local)
    print(f"ratio of medians (3 hosts / one process): {ratio:.2f}")


if __name__ == "__main__":
    main()
