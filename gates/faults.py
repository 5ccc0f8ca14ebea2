"""A fault injector between a gate and the broker: drop, duplicate, delay and reorder.

It acts on a gate's run traffic (forward values, gradients, reports, status and error
reports), never on the Ready handshake, which belongs to deploying rather than to runs.
Written as `drop=0.05,dup=0.1,delay=0-20ms,reorder,seed=7`; each gate draws from its own
generator seeded with (seed, gate), so a seeded run makes the same choices for the same
sequence of messages, in any deployment: run a seeded faulty pass again and the same messages
are dropped, duplicated and delayed by the same amounts.

    drop=P        each message is lost with probability P
    dup=P         each message is published twice with probability P
    delay=A-Bms   each copy waits a uniform A..B ms before it is published (one delay: delay=5ms)
    reorder       the messages of one step leave in a random order, each after a 0-2 ms jitter,
                  so they may overtake each other and the gate's next messages
    seed=N        the seed (default 0)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
REORDER_JITTER = 0.002


class Faults(BaseModel):
    """What to do to a gate's outgoing messages; all zero is no fault at all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drop: Probability = 0.0
    dup: Probability = 0.0
    delay_ms: tuple[Annotated[float, Field(ge=0, le=60_000)], Annotated[float, Field(ge=0, le=60_000)]] = (0.0, 0.0)
    reorder: bool = False
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.drop > 0 or self.dup > 0 or self.delay_ms[1] > 0 or self.reorder

    @property
    def text(self) -> str:
        """As `--faults` writes it: `Faults.parse(f.text) == f`."""
        low, high = self.delay_ms
        parts = [
            f"drop={self.drop:g}" if self.drop else "",
            f"dup={self.dup:g}" if self.dup else "",
            (f"delay={low:g}-{high:g}ms" if low != high else f"delay={low:g}ms") if high else "",
            "reorder" if self.reorder else "",
            f"seed={self.seed}" if self.seed else "",
        ]
        return ",".join(filter(None, parts))

    @classmethod
    def announced(cls, text: str) -> Faults | None:
        """A gate host's faults as it announces them (HostPresence.faults); None if they cannot be
        read here (a host of another version): its readers then assume the worst."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @classmethod
    def parse(cls, text: str) -> Faults:
        """`drop=0.05,dup=0.1,delay=0-20ms,reorder,seed=7` -> Faults; ValueError names the bad part."""
        fields: dict[str, object] = {}
        given: set[str] = set()
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if key in given:
                raise ValueError(f"--faults {text!r}: {key} is given twice; give it once")
            given.add(key)
            try:
                if key in ("drop", "dup") and sep:
                    fields[key] = _probability(value)
                elif key == "delay" and sep:
                    fields["delay_ms"] = _delay(value)
                elif key == "reorder" and not sep:
                    fields["reorder"] = True
                elif key == "seed" and sep:
                    if re.fullmatch(r"\s*-?\d+\s*", value) is None:
                        raise ValueError("a seed is a whole number, like seed=7")
                    fields["seed"] = int(value)
                else:
                    raise ValueError("use drop=P, dup=P, delay=A-Bms, reorder or seed=N")
            except ValueError as exc:
                raise ValueError(f"--faults {part!r}: {exc}") from None
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"--faults {text!r}: {problems}") from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a probability is a number from 0 to 1, like 0.1 (parts are separated by commas)") from None
    if not 0 <= value <= 1:
        raise ValueError(f"a probability is a number from 0 to 1, not {text}")
    return value


def _delay(text: str) -> tuple[float, float]:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?ms", text.strip())
    if match is None:
        raise ValueError("write a delay as A-Bms or Ams, like 0-20ms")
    low = float(match.group(1))
    high = float(match.group(2) or low)
    if high < low:
        raise ValueError(f"the delay range {text} runs backwards")
    return low, high


M = TypeVar("M", BaseModel, bytes)
"""A message: a scalar gate's model, or a tensor gate's encoded frame."""


@dataclass(frozen=True)
class Planned(Generic[M]):
    """One copy of a message to publish, after `delay` seconds."""

    delay: float
    topic: str
    message: M


class FaultInjector:
    """Decides, message by message, what the faults do to one gate's traffic."""

    def __init__(self, faults: Faults, *, gate: str) -> None:
        self.faults = faults
        self.rng = random.Random(f"{faults.seed}:{gate}")
        self.dropped = 0
        self.duplicated = 0

    def plan(self, batch: list[tuple[str, M]]) -> list[Planned[M]]:
        """The copies to send for one step's messages: none, one or two each, with delays."""
        f = self.faults
        order = list(batch)
        if f.reorder:
            self.rng.shuffle(order)
        planned: list[Planned[M]] = []
        for name, message in order:
            if self.rng.random() < f.drop:
                self.dropped += 1
                continue
            copies = 2 if self.rng.random() < f.dup else 1
            self.duplicated += copies - 1
            for _ in range(copies):
                delay = self.rng.uniform(*f.delay_ms) / 1000
                if f.reorder:
                    delay += self.rng.uniform(0, REORDER_JITTER)
                planned.append(Planned(delay, name, message))
        return planned
