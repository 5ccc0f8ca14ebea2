"""What step mode costs the runs that are not held: `python -m bench.held [--passes 300] [--broker URL]`.

Step mode (gates/held.py) puts two things on every run's path, held or not: each gate looks for
the held flag in each message it handles (a bytes search), and every message model has an
optional `held` field (validated when a message is read; left out of its JSON, by an
`exclude_if` callback, when it is written). Measured in one process against one broker:

1. per message: writing and reading a Forward and a Backward with the models as they are,
   against twins of the same models without the `held` field (built here);
2. per pass: `(x+y)*z` and the neuron on one in-process deployment (one shared connection), in
   alternating blocks of 50 passes (ABBA), as it is and with the gates' held check replaced by
   a constant False (gates.actor.is_held patched between blocks); every result checked.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import gates.actor
from bench.mesh import NEURON, NEURON_INPUTS, QF, QF_INPUTS
from broker.launch import mosquitto
from gates.clocks import Stamp
from gates.held import is_held
from gates.protocol import Backward, Finite, Forward, Name, Port, RunId
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.reference import evaluate
from orchestrator.runner import Runner

BLOCK = 50


class _Plain(BaseModel):
    """gates.protocol's message base as it would be without step mode: no `held` field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    circuit: Name
    sender: Name
    clock: Stamp | None = Field(default=None, exclude_if=lambda clock: clock is None)


class PlainForward(_Plain):
    type: Literal["forward"] = "forward"
    run: RunId
    value: Finite


class PlainBackward(_Plain):
    type: Literal["backward"] = "backward"
    run: RunId
    port: Port
    grad: Finite


def per_message_us(*works: Callable[[], object], number: int = 20_000, rounds: int = 9) -> list[float]:
    """Microseconds per call of each of `works`: the best of `rounds` timings, taken in turns so
    that the machine's drift hits them all alike."""
    best = [float("inf")] * len(works)
    for _ in range(rounds):
        for i, work in enumerate(works):
            best[i] = min(best[i], timeit.timeit(work, number=number) / number * 1e6)
    return best


def message_costs() -> None:
    forward = {"circuit": "neuron.5d0c9e7a", "sender": "mul_3", "run": "9c1f04e2a7b3d615", "value": -1.25}
    backward = {**forward, "port": 1, "grad": 0.5}
    del backward["value"]
    pairs: list[tuple[str, type[BaseModel], type[BaseModel], dict[str, object]]] = [
        ("forward", Forward, PlainForward, forward),
        ("backward", Backward, PlainBackward, backward),
    ]
    for kind, model, plain, fields in pairs:
        message, twin = model.model_validate(fields), plain.model_validate(fields)
        payload = message.model_dump_json().encode()
        assert payload == twin.model_dump_json().encode(), "an unheld message must be byte for byte the plain one"
        written = per_message_us(message.model_dump_json, twin.model_dump_json)
        read = per_message_us(
            functools.partial(model.model_validate_json, payload), functools.partial(plain.model_validate_json, payload)
        )
        (search,) = per_message_us(functools.partial(is_held, payload))
        print(
            f"{kind:<8} write {written[0]:.2f} us (without held: {written[1]:.2f} us)   "
            f"read {read[0]:.2f} us (without held: {read[1]:.2f} us)   held check {search * 1000:.0f} ns"
        )


@contextmanager
def held_check(present: bool) -> Iterator[None]:
    """The gates' held check as it is, or replaced by a constant False (what a gate without step mode does)."""
    names = vars(gates.actor)  # the module's globals: the actor looks is_held up there for each message
    original = names["is_held"]
    if not present:
        names["is_held"] = lambda payload: False
    try:
        yield
    finally:
        names["is_held"] = original


async def block(runner: Runner, inputs: dict[str, float], passes: int, samples: list[float]) -> None:
    expected = evaluate(runner.circuit, inputs)
    for _ in range(passes):
        start = time.perf_counter()
        result = await runner.run(inputs)
        samples.append(time.perf_counter() - start)
        assert result == expected, result


async def pass_costs(broker: BrokerAddress, passes: int) -> None:
    for source, inputs in ((QF, QF_INPUTS), (NEURON, NEURON_INPUTS)):
        with_check: list[float] = []
        without: list[float] = []
        async with in_process(compile_source(source), broker, connections="shared") as runner:
            await block(runner, inputs, 20, [])  # warm-up
            order = [(True, with_check), (False, without)]
            while len(with_check) < passes:
                for present, samples in order:
                    with held_check(present):
                        await block(runner, inputs, BLOCK, samples)
                order.reverse()  # ABBA: neither goes first (and finds the caches warm) more often
        ms = statistics.median(with_check) * 1000, statistics.median(without) * 1000
        print(
            f"pass {source:<28} with the held check {ms[0]:.3f} ms, without {ms[1]:.3f} ms "
            f"(ratio {ms[0] / ms[1]:.3f}; {len(with_check)} passes each)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--broker", default=None)
    args = parser.parse_args()
    message_costs()
    if args.broker:
        asyncio.run(pass_costs(BrokerAddress.parse(args.broker), args.passes))
        return
    with mosquitto() as url:
        asyncio.run(pass_costs(BrokerAddress.parse(url), args.passes))


if __name__ == "__main__":
    main()
