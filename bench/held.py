"""What step mode costs the runs that are not held: `python -m bench.held`.

Step mode (gates/held.py) puts one thing on every run's path, held or not: every message model
has an optional `held` field (validated when a message is read; left out of its JSON, by an
`exclude_if` callback, when it is written). A gate reads the flag from the message its core
already decoded (`message.held`, an attribute), so there is no other check to measure. Here:
writing and reading a Forward and a Backward with the models as they are, against twins of the
same models without the `held` field (built here), best of 9 timings taken in turns.
"""

from __future__ import annotations

import argparse
import functools
import timeit
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gates.clocks import Stamp
from gates.protocol import Backward, Finite, Forward, Name, Port, RunId


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
        print(
            f"{kind:<8} write {written[0]:.2f} us (without held: {written[1]:.2f} us)   "
            f"read {read[0]:.2f} us (without held: {read[1]:.2f} us)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    message_costs()


if __name__ == "__main__":
    main()
