"""Payloads for fuzzing gates: random bytes, random JSON, almost-right messages, and valid ones.

One generator, two drivers: hypothesis (`fuzz_cases()`, for the unit tests, with shrinking)
and a seeded `random.Random` (`random_cases()`, for pushing 10,000 payloads through a real
broker quickly). Each case knows whether the gate must reject it; a valid case is one that
no gate reports as an error (it may open a run, which a Release frees again).

The circuit is `q = x + y; f = q * z`, deployed as circuit id `circuit`.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st

from gates.protocol import ORCHESTRATOR, topic

CIRCUIT = "circuit"
SOURCE = "q = x + y; f = q * z"
INPUTS_OF = {"q": ("x", "y"), "f": ("q", "z")}
READERS = {"x": ["q"], "y": ["q"], "q": ["f"], "z": ["f"]}
GATES = ("x", "y", "z", "q", "f")
LEAVES = ("x", "y", "z")
ONE_MB = "m" * (1 << 20)
T = TypeVar("T")


@dataclass(frozen=True)
class FuzzCase:
    topic: str
    payload: bytes
    rejected: bool
    """True when every gate that hears it must answer with an ErrorReport."""
    runs: tuple[str, ...] = ()
    """Runs a valid case may open (to release afterwards)."""

    def hearers(self) -> list[str]:
        """The gates subscribed to this case's topic."""
        kind, _, gate = self.topic.split("/", 2)[2].partition("/")
        if kind == "control":
            return list(GATES)
        if kind == "fwd":
            return READERS.get(gate, [])
        return [gate]


class Chooser:
    """The choices the generator makes, drawn from hypothesis or from a seeded Random."""

    def __init__(self, integer: Callable[[int, int], int]) -> None:
        self.integer = integer

    def pick(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def chance(self) -> bool:
        return self.integer(0, 1) == 1

    def value(self) -> float:
        return self.integer(-10_000, 10_000) / 1000


def generate(c: Chooser) -> FuzzCase:
    family = c.pick([_random_bytes, _random_json, _almost_right, _almost_right, _wrong_placement, _valid])
    return family(c)


_RUN_NUMBERS = itertools.count()


def _run_id(c: Chooser, prefix: str) -> str:
    """A run id no other case uses: a gate ignores a run it has finished, so a repeat would not be rejected."""
    return f"{prefix}{next(_RUN_NUMBERS)}"


def _random_bytes(c: Chooser) -> FuzzCase:
    data = bytes(c.integer(0, 255) for _ in range(c.integer(1, 40)))
    return FuzzCase(_any_topic(c), data, rejected=True)


def _random_json(c: Chooser) -> FuzzCase:
    value: Any = c.pick([None, True, 1, -1.5, "text", [], [1, "a"], {}, {"type": 3}, {"run": []}, 10**400])
    return FuzzCase(_any_topic(c), json.dumps(value).encode(), rejected=True)


def _any_topic(c: Chooser) -> str:
    kind = c.pick(["feed", "fwd", "grad", "control"])
    if kind == "control":
        return topic(CIRCUIT, "control")
    gate = c.pick(LEAVES if kind == "feed" else ("x", "y", "q", "z") if kind == "fwd" else GATES)
    return topic(CIRCUIT, kind, gate)  # type: ignore[arg-type]


def _right_message(c: Chooser, run: str) -> tuple[str, dict[str, Any]]:
    """A valid message on its right topic (valid as a message: not necessarily welcome)."""
    kind = c.pick(["feed", "fwd", "grad", "control"])
    base: dict[str, Any] = {"circuit": CIRCUIT, "run": run}
    if kind == "feed":
        leaf = c.pick(LEAVES)
        return topic(CIRCUIT, "feed", leaf), {**base, "type": "feed", "sender": ORCHESTRATOR, "value": c.value()}
    if kind == "fwd":
        sender = c.pick(("x", "y", "q", "z"))
        return topic(CIRCUIT, "fwd", sender), {**base, "type": "forward", "sender": sender, "value": c.value()}
    if kind == "grad":
        gate = c.pick(GATES)
        message = {**base, "type": "backward", "sender": "f", "port": 0, "grad": c.value()}
        return topic(CIRCUIT, "grad", gate), message
    return topic(CIRCUIT, "control"), {**base, "type": c.pick(["release", "probe"]), "sender": ORCHESTRATOR}


def _almost_right(c: Chooser) -> FuzzCase:
    """A right message with one field broken in a way the protocol always rejects."""
    name, message = _right_message(c, _run_id(c, "fz-i-"))
    field = c.pick(list(message))
    mutation = c.pick(["wrong_type", "huge", "nan", "one_mb", "missing", "extra", "unknown_type", "port"])
    text: str | None = None
    if mutation == "wrong_type":
        message[field] = c.pick([[1], {"a": 1}, [], {}])  # never coerced to a number or a string
    elif mutation == "huge":  # 1e400 overflows to inf, which no field accepts
        text = json.dumps(message).replace(json.dumps(message[field]), "1e400", 1)
    elif mutation == "nan":
        message[field] = float("nan")  # json.dumps writes NaN, which no field accepts
    elif mutation == "one_mb":
        message[field] = ONE_MB  # too long for an id, not a number, not a type
    elif mutation == "missing":
        message.pop(field)  # every field is required (a feed without value: missing_value)
    elif mutation == "extra":
        message["unexpected"] = 1
    elif mutation == "unknown_type":
        message["type"] = c.pick(["fwd", "Forward", "grad", "hello"])
    else:
        message["port"] = c.pick([-1, -(10**30), 10**30])
    return FuzzCase(name, (text or json.dumps(message)).encode(), rejected=True)


def _wrong_placement(c: Chooser) -> FuzzCase:
    """Right-looking messages where they do not belong: wrong topic, sender, circuit or run."""
    run = _run_id(c, "fz-i-")
    kind = c.pick(["grad_unknown_run", "forward_on_grad", "wrong_sender", "wrong_circuit", "feed_without_value"])
    if kind == "grad_unknown_run":
        message = {"type": "backward", "circuit": CIRCUIT, "sender": "f", "run": run, "port": 0, "grad": 1.0}
        return FuzzCase(topic(CIRCUIT, "grad", c.pick(GATES)), json.dumps(message).encode(), rejected=True)
    if kind == "forward_on_grad":
        message = {"type": "forward", "circuit": CIRCUIT, "sender": "x", "run": run, "value": 1.0}
        return FuzzCase(topic(CIRCUIT, "grad", c.pick(GATES)), json.dumps(message).encode(), rejected=True)
    if kind == "wrong_sender":
        message = {"type": "forward", "circuit": CIRCUIT, "sender": "z", "run": run, "value": 1.0}
        return FuzzCase(topic(CIRCUIT, "fwd", "x"), json.dumps(message).encode(), rejected=True)
    if kind == "wrong_circuit":
        message = {"type": "probe", "circuit": "elsewhere", "sender": ORCHESTRATOR, "run": run}
        return FuzzCase(topic(CIRCUIT, "control"), json.dumps(message).encode(), rejected=True)
    message = {"type": "feed", "circuit": CIRCUIT, "sender": ORCHESTRATOR, "run": run, "value": None}
    return FuzzCase(topic(CIRCUIT, "feed", c.pick(("x", "y", "z"))), json.dumps(message).encode(), rejected=True)


def _valid(c: Chooser) -> FuzzCase:
    run = _run_id(c, "fz-v-")
    name, message = _right_message(c, run)
    if message["type"] == "backward":  # a gradient for a run the gate never saw is an error: make it a probe
        name, message = topic(CIRCUIT, "control"), {**message, "type": "probe", "sender": ORCHESTRATOR}
        del message["port"], message["grad"]
    return FuzzCase(name, json.dumps(message).encode(), rejected=False, runs=(run,))


@st.composite
def fuzz_cases(draw: st.DrawFn) -> FuzzCase:
    """Hypothesis strategy over every family."""
    return generate(Chooser(lambda lo, hi: draw(st.integers(lo, hi))))


def random_cases(count: int, seed: int) -> list[FuzzCase]:
    rng = random.Random(seed)
    chooser = Chooser(rng.randint)
    return [generate(chooser) for _ in range(count)]
