"""Untraced passes now and before tracing existed: one measurement, run in turns on two checkouts.

    python -m bench.untraced [--before 5d22952] [--rounds 4] [--passes 300]

Tracing must leave untraced runs as they were: their messages byte for byte (a unit test,
tests/unit/test_clocks.py), and their speed. This checks the speed. `--before` (default: the
commit just before tracing came in) is checked out into a temporary git worktree; then, against
one Mosquitto, this file's `--measure` part runs `(x+y)*z` and the neuron, per-gate and shared,
PASSES plain passes each, in a process of its own on each checkout, the two checkouts taking
turns (which goes first alternates). The measuring part imports only what both checkouts
have (the compiler, in_process, BrokerAddress), so the same code measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEFORE_TRACING = "5d22952"
"""The commit before 0322dd2, which brought logical clocks and traces."""
CIRCUITS = {
    "(x+y)*z": {"x": -2.0, "y": 5.0, "z": -4.0},
    "sigmoid(w0*x0 + w1*x1 + w2)": {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0},
}
CONNECTIONS = ("per-gate", "shared")


async def measure(url: str, passes: int) -> dict[str, float]:
    """Median ms of `passes` plain passes per (circuit, connections), on whatever checkout is imported."""
    from gates.transport import BrokerAddress
    from orchestrator.compiler import compile_source
    from orchestrator.deploy import in_process

    broker = BrokerAddress.parse(url)
    medians = {}
    for source, inputs in CIRCUITS.items():
        for connections in CONNECTIONS:
            async with in_process(compile_source(source), broker, connections=connections) as runner:  # type: ignore[arg-type]
                for _ in range(20):
                    await runner.run(inputs)
                samples = []
                for _ in range(passes):
                    start = time.perf_counter()
                    await runner.run(inputs)
                    samples.append(time.perf_counter() - start)
            medians[f"{source} | {connections}"] = statistics.median(samples) * 1000
    return medians


def run_on(tree: Path, url: str, passes: int) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", url, "--passes", str(passes)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True)
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE_TRACING)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.passes))))
        return
    from broker.launch import mosquitto

    now = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch, mosquitto() as url:
        before = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(now), "worktree", "add", "--detach", str(before), args.before], check=True)
        try:
            results: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
            for round_ in range(args.rounds):
                trees = [("before", before), ("now", now)]
                for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
                    results[name].append(run_on(tree, url, args.passes))
        finally:
            subprocess.run(["git", "-C", str(now), "worktree", "remove", "--force", str(before)], check=True)
    print(f"plain passes, median ms of {args.passes} per run, {args.rounds} runs each, {args.before} vs now:")
    for key in results["now"][0]:
        then = [run[key] for run in results["before"]]
        current = [run[key] for run in results["now"]]
        ratio = statistics.median(current) / statistics.median(then)
        print(
            f"{key:<40} before {statistics.median(then):7.3f} ms ({min(then):.3f}-{max(then):.3f})"
            f"  now {statistics.median(current):7.3f} ms ({min(current):.3f}-{max(current):.3f})"
            f"  now/before {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
