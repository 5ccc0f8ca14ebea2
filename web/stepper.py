"""The step-mode network actor: it holds a run's messages between the gates and the broker.

In a held run (gates/held.py) every data message is published to its held topic
`gatemesh/C/held/<kind>/<gate>`, which no gate reads. The Stepper subscribes to them, lists
what waits there, and does what the page says with each message:

    deliver    publish its exact payload to the real topic, once (if the connection goes
               before the broker acknowledges it, it waits again, to be delivered again)
    drop       forget it (the run then waits forever: the page names who waits)
    duplicate  publish it once now and list a second copy, to deliver (or drop) whenever the
               student likes: late, after other messages (the receiver keeps the first copy; the
               second changes nothing, and the trace and the pictures show it arriving)
    hold       pin it, so that "deliver all" leaves it where it is

Because the Stepper is a client of the broker like any other, it works the same whether the
gates run in this process or on gate hosts anywhere. Every choice is recorded with a key that
names the message by what it is (its phase, sender, topic and port), not by its run, so a
later run can replay the choices up to any point (time travel).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Literal, NoReturn

from pydantic import ValidationError

from gates.errors import ConnectionLost, TransportError
from gates.held import held_filter, real_topic
from gates.lifecycle import Backoff
from gates.mqtt311 import Session
from gates.protocol import MESSAGE_ADAPTER, Backward, Feed, Forward, GradReport, parse_topic
from gates.trace_records import message_id
from gates.transport import BrokerAddress
from viz.svg import num

log = logging.getLogger(__name__)

Action = Literal["deliver", "drop", "duplicate", "hold"]
PHASES = {"feed": "feed", "fwd": "forward", "grad": "backward", "report": "report"}


@dataclass(frozen=True)
class Choice:
    """One thing the student did (or "deliver all" did) with one message."""

    action: Action
    key: str
    label: str
    pinned: bool = False
    """For a hold: whether it pinned the message or unpinned it (a replay sets that, never toggles)."""


@dataclass
class Held:
    """A message sent but not yet delivered."""

    id: str
    key: str
    topic: str
    payload: bytes
    run: str
    phase: str
    src: str
    to: str
    number: float | None
    port: int | None
    msg_id: str = ""
    """sender:lamport, as the sentences and the Lamport diagram name it ("" in an untraced run)."""
    port_told: bool = False
    """The receiver is read by the sender at more than one port (x*x): the port tells its two gradients apart."""
    since: float = field(default_factory=time.monotonic)
    pinned: bool = False
    copy: bool = False
    """The second copy a "duplicate" left waiting."""

    @property
    def message(self) -> str:
        """What the message is and where it goes, the same for both copies of a duplicate."""
        what = f"{self.phase} {num(self.number)}" if self.number is not None else self.phase
        port = f"as {self.src}'s input {(self.port or 0) + 1}" if self.port_told else ""  # from 1, as the figure says
        names = [self.msg_id, port]
        named = ", ".join(name for name in names if name)
        return f"{what}: {self.src} \u2192 {self.to}" + (f" ({named})" if named else "")

    @property
    def label(self) -> str:
        return self.message + (" (second copy)" if self.copy else "")

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            "key": self.key,
            "phase": self.phase,
            "src": self.src,
            "to": self.to,
            "number": num(self.number) if self.number is not None else "",
            "label": self.label,
            "pinned": self.pinned,
        }


def _base(key: str) -> str:
    """A key without its copy number: "forward add_1 add_1 #2" is a copy of "forward add_1 add_1"."""
    return key.split(" #", 1)[0]


def describe(held_name: str, payload: bytes) -> tuple[str, str, str, str, float | None, int | None, str] | None:
    """(real topic, run, phase, sender, number, port, message id) of a held message, or None if it
    is not one (the id "" when the run is not traced)."""
    real = real_topic(held_name)
    parsed = parse_topic(real) if real is not None else None
    if real is None or parsed is None:
        return None
    try:
        message = MESSAGE_ADAPTER.validate_json(payload)
    except ValidationError:
        return None
    match message:
        case Feed(value=value) | Forward(value=value):
            number, port = value, None
        case Backward(grad=grad, port=port_):
            number, port = grad, port_
        case GradReport(grad=grad):
            number, port = grad, None
        case _:
            return None
    msg_id = message_id(message.sender, message.clock) if message.clock is not None else ""
    return real, message.run, PHASES[parsed[1]], message.sender, number, port, msg_id


class Stepper:
    """Holds the messages of the current held run; `serve()` keeps its connection."""

    def __init__(
        self,
        broker: BrokerAddress,
        on_change: Callable[[], None],
        on_drop: Callable[[Held], None] = lambda held: None,
        on_duplicate: Callable[[Held], None] = lambda held: None,
    ) -> None:
        self.broker = broker
        self.on_change = on_change
        self.on_drop = on_drop
        """Told of every message dropped (by the student or a replay of their choices): no gate hears of it."""
        self.on_duplicate = on_duplicate
        """Told of every message duplicated, once the broker has its first copy: no gate hears of that either."""
        self.pending: dict[str, Held] = {}
        self.history: list[Choice] = []
        self.run: str | None = None
        """The held run whose messages are listed; anything else that arrives is discarded."""
        self.auto = False
        """Deliver every message as it arrives (after "deliver all"), pinned ones excepted."""
        self.replay: deque[Choice] = deque()
        self.last_change = time.monotonic()
        self._ids = itertools.count(1)
        self._seen: Counter[str] = Counter()
        self._copied_from: dict[str, str] = {}
        """The key of each copy a duplicate listed -> the key of the message it copies."""
        self._unacknowledged = 0
        """Deliveries the broker has not acknowledged yet: each may come back to wait again."""
        self._filters: set[str] = set()
        self._readers: Mapping[str, Sequence[str]] = {}
        self._read_twice: Set[tuple[str, str]] = frozenset()
        self._session: Session | None = None
        self.connected = asyncio.Event()

    # -- the connection -------------------------------------------------------------------

    async def serve(self) -> NoReturn:
        backoff = Backoff()
        while True:
            session: Session | None = None
            try:
                session = await Session.open(self.broker, self._on_message)
                if self._filters:
                    await session.subscribe(sorted(self._filters))
                self._session = session
                self.connected.set()
                backoff.reset()
                if self.auto:  # what waits again after a lost connection (_unless_confirmed)
                    self.deliver_all()
                raise await session.lost
            except TransportError as exc:
                lost = exc
            finally:  # at once: a delivery meanwhile is refused, not queued on the dead session
                self.connected.clear()
                self._session = None
                if session is not None:
                    session.close()
            delay = backoff.next()
            log.warning("stepper: lost the broker at %s (%s); reconnecting in %g s", self.broker, lost, delay)
            await asyncio.sleep(delay)

    async def watch(
        self, circuit_id: str, readers: Mapping[str, Sequence[str]], read_twice: Set[tuple[str, str]] = frozenset()
    ) -> None:
        """Hear the held messages of deployment `circuit_id` (subscribed when this returns), and
        no longer those of the deployments before it (the page has one at a time: theirs are gone).

        `readers`: who reads each gate's forward value (it goes to a topic of the sender's, not to
        a gate), so a held one can say where it is going. `read_twice`: (reader, gate) where the
        reader takes the gate at more than one port (Circuit.read_twice)."""
        self._readers = readers
        self._read_twice = read_twice
        name = held_filter(circuit_id)
        if name in self._filters:
            return
        try:
            async with asyncio.timeout(10):
                await self.connected.wait()
        except TimeoutError:
            raise ConnectionLost("the step-mode actor has had no connection to the broker for 10 s") from None
        assert self._session is not None
        await self._session.subscribe([name])
        gone, self._filters = self._filters, {name}
        if gone:
            await self._session.unsubscribe(sorted(gone))

    # -- a run ----------------------------------------------------------------------------

    def arm(self, replay: Sequence[Choice] = ()) -> None:
        """Forget the last run's messages and choices; replay `replay` on the next run's messages."""
        self.pending.clear()
        self.history = []
        self.run = None
        self.auto = False
        self.replay = deque(replay)
        self._seen.clear()
        self._copied_from.clear()
        self._touch()

    def begin(self, run: str) -> None:
        self.run = run
        self.last_change = time.monotonic()  # the run's first feeds are on their way: not quiet yet

    def close(self) -> None:
        """The run is over: forget what still waits (its history stays, to travel back into)."""
        self.run = None
        self.pending.clear()
        self.replay.clear()
        self.auto = False
        self._touch()

    def _on_message(self, name: str, payload: bytes) -> None:
        described = describe(name, payload)
        if described is None:
            log.warning("stepper: ignored a message on %s that is not a held data message", name)
            return
        real, run, phase, sender, number, port, msg_id = described
        if run != self.run:
            return  # a run that is over (or was never stepped here): nothing will deliver it
        gate = real.rsplit("/", 1)[1]
        to = "orchestrator" if phase == "report" else gate if phase != "forward" else self._read_by(gate)
        base = f"{phase} {sender} {gate} {port if port is not None else ''}".strip()
        told = phase == "backward" and (sender, gate) in self._read_twice
        held = Held(*self._new_id_and_key(base), real, payload, run, phase, sender, to, number, port, msg_id, told)
        self._list(held)
        if self.replay:
            self._advance_replay()
        elif self.auto:
            self._act("deliver", held)

    def _new_id_and_key(self, base: str) -> tuple[str, str]:
        """A fresh id, and a key that tells a message from those listed before it with the same
        `base`: phase, sender, topic and port (`#2`, `#3`...). A key names the message in the
        recorded choices that a replay applies again."""
        self._seen[base] += 1
        return f"m{next(self._ids)}", base if self._seen[base] == 1 else f"{base} #{self._seen[base]}"

    def _list(self, held: Held) -> None:
        self.pending[held.id] = held
        self._touch()

    @property
    def idle(self) -> bool:
        """Nothing waits here, nothing is left to replay, and the broker has acknowledged every
        delivery: only then can nothing the stepper does move the run on."""
        return not self.pending and not self.replay and self._unacknowledged == 0

    def _read_by(self, gate: str) -> str:
        readers = self._readers.get(gate)
        return ", ".join(readers) if readers else f"the readers of {gate}"

    # -- what the page asks ---------------------------------------------------------------

    def act(self, action: Action, message_id: str) -> None:
        """Do `action` with one held message (a choice of the student's: any replay stops)."""
        held = self.pending.get(message_id)
        if held is None:
            raise KeyError(f"message {message_id} is not waiting (delivered, dropped, or of an earlier run)")
        self.replay.clear()
        self._act(action, held)

    def deliver_all(self) -> None:
        """Deliver what waits and, from now on, what arrives; pinned messages stay."""
        self.replay.clear()
        self.auto = True
        for held in list(self.pending.values()):
            if not held.pinned:
                self._act("deliver", held)

    def _act(self, action: Action, held: Held, pin: bool | None = None) -> None:
        """Do `action` with `held`; a hold toggles its pin, or sets it to `pin` (a replay)."""
        if action == "hold":
            held.pinned = not held.pinned if pin is None else pin
            label = ("pin " if held.pinned else "unpin ") + held.label
            self.history.append(Choice("hold", held.key, label, held.pinned))
            if self.auto and not held.pinned:  # "deliver all" holds only what is pinned
                self._act("deliver", held)
                return
            self._touch()
            return
        choice = Choice(action, held.key, f"{action} {held.label}")
        copy = None
        if action != "drop":
            session = self._session
            if session is None or session.lost.done():  # its publish would be queued on a dead connection
                msg = f"the stepper is not connected to the broker at {self.broker}"
                raise ConnectionLost(msg, broker=str(self.broker))
            if action == "duplicate":  # numbered once the publish is sure to be made: a refusal takes no number
                message_id, key = self._new_id_and_key(_base(held.key))
                copy = replace(held, id=message_id, key=key, since=time.monotonic(), pinned=False, copy=True)
                self._copied_from[key] = held.key
            confirmed = session.publish(held.topic, held.payload, confirm=True)
            assert confirmed is not None, "the stepper's session is QoS 1"
            self._unacknowledged += 1
            confirmed.add_done_callback(lambda done: self._unless_confirmed(done, held, choice, copy))
        del self.pending[held.id]
        self.history.append(choice)
        if action == "drop":
            self.on_drop(held)
        if copy is not None:
            self._list(copy)
        else:
            self._touch()

    def _unless_confirmed(self, done: asyncio.Future[None], held: Held, choice: Choice, copy: Held | None) -> None:
        """A delivery the broker did not acknowledge before the connection went: it may never
        have arrived, so it waits again (and its choice is forgotten), to be delivered again.
        At worst a gate gets it twice, which changes nothing (gates/core.py). A duplicate the
        broker did acknowledge is told (`on_duplicate`): its first copy went."""
        self._unacknowledged -= 1
        if done.cancelled() or held.run != self.run:
            return
        if done.exception() is None:
            if copy is not None:
                self.on_duplicate(held)
            return
        if not any(c is choice for c in self.history):
            return  # forgotten already: a copy whose original was taken back
        self.history = [c for c in self.history if c is not choice]
        if copy is not None:
            self._take_back(copy.key)
        self.pending[held.id] = held
        self._touch()

    def _take_back(self, key: str) -> None:
        """Forget the copy `key` an unacknowledged duplicate listed, every copy made of it, and what
        was done with them; number the next copies as a replay of the history left would. (The
        broker acknowledges in order, so what is taken back holds the highest numbers.)"""
        gone = {key}
        while more := {k for k, source in self._copied_from.items() if source in gone} - gone:
            gone |= more
        self.pending = {i: h for i, h in self.pending.items() if h.key not in gone}
        self.history = [c for c in self.history if c.key not in gone]
        for k in gone:
            del self._copied_from[k]
        self._seen[_base(key)] -= len(gone)

    def _advance_replay(self) -> None:
        """Apply the recorded choices, in order, as their messages turn up."""
        while self.replay:
            wanted = self.replay[0]
            held = next((h for h in self.pending.values() if h.key == wanted.key), None)
            if held is None:
                return
            self.replay.popleft()
            self._act(wanted.action, held, wanted.pinned)

    def _touch(self) -> None:
        self.last_change = time.monotonic()
        self.on_change()

    def view(self) -> dict[str, object]:
        return {
            "pending": [held.view() for held in self.pending.values()],
            "history": [{"action": c.action, "label": c.label} for c in self.history],
            "replaying": [c.label for c in self.replay],
            "auto": self.auto,
            "stepping": self.run is not None,
        }
