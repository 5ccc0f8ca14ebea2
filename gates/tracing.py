"""A gate's side of a traced run: its logical clocks, the events it records, and where they go.

Tracing is decided per run by the orchestrator, not configured at the gate: the messages of a
traced run carry a `clock` (gates/clocks.py), and a gate that receives one keeps a Clock for
that run, stamps every message it sends for it, and records each of its events there, where
they happen:

    receive   a message arrived (merge, then tick); a second copy of one is marked duplicate
    compute   the gate fired: its inputs and output (forward), or its total gradient and
              what it sent to each input (backward)
    send      a message left (tick; the stamp travels on it)
    drop, duplicate, delay, reorder
              what the fault injector did to the messages just sent

A gate (one without a fault injector: see GateTracer.every_step) keeps a run's events until its
part of the run is over (it sent its gradients or its
report, failed the run, answered a probe or was told to release it) and then publishes them as
one TraceBatch on gatemesh/C/trace/G, *after* that step's own messages, once they are written.
A step notes each event as a Fact, a tuple of plain data, and the batch is those tuples encoded
as they are: the gate builds nothing per event. A send or a receive names its message by
(topic, id) only: the message crossed the broker, where the orchestrator reads its number (a
fault's event, whose message may never cross, has its fields). On a shared connection the batch
goes with the next write the connection makes anyway (gates/mux.py, Session.publish's `later`).
Anything that happens at the gate later (a late copy arriving) is published at once, unless
the gate has let go of that run's clock (it keeps REMEMBER_RUNS): then it is not traced. One
message per gate per run, off the pass's path, is what keeps a traced pass near a plain one
(bench/tracing.py). So a run's last report can reach the orchestrator before the batches do;
the recorder's `drain` waits for them (every message crossed or received has a send, recorded
in its sender's batch). Events still held by a gate whose host dies are lost with it. Untraced
runs never reach this module: the actor looks at the `clock` of the message its core has just
decoded. In a held run (step mode, gates/held.py) a gate publishes its events after every
step: a human delivers each message.

A vector clock has an entry per node of the deployment (gates/clocks.py): at 1,000 gates, every
event of the backward pass has ~1,000 that are not zero. So in a batch only the first event has
its whole vector; every later one has the entries that changed since the event before it, by
node number (a node's vector only grows). The gate never copies its vector per event, and a gate
that hears 500 consumers sends 500 small receipts, not 500 whole vectors. The recorder expands
them again (TraceBatch.trace_events): a trace file has every event's whole `vc`. A batch that
would still exceed TRACE_BATCH_BYTES goes as several, each starting with a whole vector.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_json

from gates.clocks import Clock, M, Stamp, trusted
from gates.protocol import (
    MESSAGE_ADAPTER,
    Backward,
    ErrorReport,
    Forward,
    GradReport,
    Message,
    Probe,
    Release,
    topic,
)
from gates.trace_records import PHASE_OF, Event, EventType, MsgRef, message_id, msg_fields

REMEMBER_RUNS = 1024
"""Traced runs whose clock a gate keeps (late duplicates still find theirs)."""
REMEMBER_FORGOTTEN = 16 * REMEMBER_RUNS
"""Ids of runs whose clock a gate let go: a late copy for one is not traced (a fresh clock would
count this gate's events from 1 again, as if the run's first ones had never been)."""
TRACE_BATCH_BYTES = 512 * 1024
"""A gate's trace message larger than this is split: far below the broker's packet limit
(gates/mqtt_codec.py's MAX_PACKET), which would close the gate's connection."""


_GRADIENTS = (Backward, GradReport)
_ENDS = (Backward, GradReport, ErrorReport)
"""A step that sends one of these ends the gate's part of the run."""


def with_clock(message: M, stamp: Stamp) -> M:
    """`message.model_copy(update={"clock": stamp})`, for a message made by this process: the
    rest of a frozen message is shared, not validated again."""
    return trusted(type(message), {**message.__dict__, "clock": stamp}, message.model_fields_set | _CLOCK)


_CLOCK = frozenset({"clock"})


Fact = tuple[str, int, int, "list[int] | dict[int, int]", bool, "MsgRef | Event | None", "Event | None"]
"""An event as a step notes it and its batch carries it (BatchedFact): (type, t_ns, lamport, vc
or the entries changed by node number, whether it is the whole vc, its message as (topic, id)
or as TraceMsg fields, its other fields). Plain data, encoded as it is: the gate builds nothing
per event (bench/tracing.py)."""


class EncodedBatch(BaseModel):
    """A TraceBatch the gate encoded itself (its facts, by pydantic_core.to_json): what the link publishes."""

    model_config = ConfigDict(frozen=True)

    text: str

    def model_dump_json(self, *args: Any, **kwargs: Any) -> str:
        return self.text


@dataclass(slots=True)
class _Traced:
    """What a gate remembers of one traced run.

    A gate remembers REMEMBER_RUNS of them: few objects the garbage collector must visit (slots,
    dicts of numbers and strings only, a list of facts only while the gate's part of the run
    lasts: they hold the messages they are about), so a traced pass does not pay for full
    collections over them.
    """

    clock: Clock
    inputs: dict[int, float] = field(default_factory=dict)
    grads: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: dict[str, None] = field(default_factory=dict)
    """Ids of the messages received (a dict, not a set: the collector leaves dicts of strings alone)."""
    held: list[Fact] | None = None
    whole: bool = True
    """The next event starts a batch: it carries the whole vector clock, the later ones the entries changed."""
    done: bool = False
    """The gate's part of the run is over: from now on every event is published at once."""
    flush: bool = False
    """Publish what is held with this step's messages."""


class GateTracer:
    """One gate's clocks and events, over all its traced runs."""

    def __init__(
        self, gate: str, index: int, inputs: Sequence[str], circuit: str, host: str, *, every_step: bool = False
    ) -> None:
        self.gate = gate
        self.every_step = every_step
        """Publish each step's events at once, not when the gate's part of the run is over: a gate
        with a fault injector (its delays stretch a run over seconds, its drops stall it until the
        timeout's probe, and a live view would show nothing of what did happen meanwhile)."""
        self.index = index
        """The gate's number: its entry in the vector clocks."""
        self.inputs = tuple(inputs)
        self.circuit = circuit
        self.host = host
        self._runs: dict[str, _Traced] = {}
        """The runs remembered, the most recently used last."""
        self._last: tuple[str, _Traced] | None = None
        """The run used last, and its state: found again without a lookup."""
        self._forgotten: dict[str, None] = {}
        """Runs let go of, the oldest first (REMEMBER_FORGOTTEN of them)."""

    def _state(self, run: str) -> _Traced:
        if self._last is not None and self._last[0] == run:  # the step's batch, right after the step
            return self._last[1]
        runs = self._runs
        state = runs.pop(run, None)
        if state is None:
            state = _Traced(Clock(self.gate, self.index))
            if len(runs) >= REMEMBER_RUNS:
                oldest = next(iter(runs))
                del runs[oldest]
                self._forgotten[oldest] = None
                if len(self._forgotten) > REMEMBER_FORGOTTEN:
                    del self._forgotten[next(iter(self._forgotten))]
        runs[run] = state
        self._last = (run, state)
        return state

    def _note(
        self,
        kind: EventType,
        state: _Traced,
        changed: dict[int, int],
        now: int,
        msg: MsgRef | Event | None = None,
        extra: Event | None = None,
    ) -> Fact:
        """An event as a Fact. `changed`: the entries of the vector clock the event changed
        (Clock.advance, merge). Facts must reach `batch` in the order they are noted: each
        changed clock is from the one before, and the first of a batch copies the whole vector now."""
        clock = state.clock
        if state.whole:
            state.whole = False
            return (kind, now, clock.lamport, clock.vc.copy(), True, msg, extra)
        return (kind, now, clock.lamport, changed, False, msg, extra)

    def step(
        self, topic_name: str, received: bytes | Message, outgoing: Sequence[tuple[str, BaseModel]]
    ) -> tuple[str | None, list[tuple[str, BaseModel]], list[Fact]]:
        """(run, the outgoing messages stamped, the step's events as Facts) for one message the
        core just handled.

        `received`: the message as the core decoded it (or its payload, decoded here). On the
        path of every traced pass, before the step's messages leave: only the clocks' work, and
        a tuple per event (bench/tracing.py)."""
        if isinstance(received, bytes):
            try:
                received = MESSAGE_ADAPTER.validate_json(received)
            except ValidationError:
                return None, list(outgoing), []
        message = received
        run = getattr(message, "run", None)
        stamp = getattr(message, "clock", None)
        if stamp is None or type(message) not in PHASE_OF or not isinstance(run, str) or run in self._forgotten:
            return None, list(outgoing), []
        now = time.time_ns()  # the step's events happen within microseconds: one reading for all
        state = self._state(run)
        clock = state.clock
        msg_id = message_id(message.sender, stamp)
        duplicate = _DUPLICATE if msg_id in state.seen else None
        state.seen[msg_id] = None
        facts = [self._note("receive", state, clock.merge(stamp), now, (topic_name, msg_id), duplicate)]
        if isinstance(message, Forward):
            for port, source in enumerate(self.inputs):
                if source == message.sender:
                    state.inputs.setdefault(port, message.value)
        elif isinstance(message, Backward):
            state.grads.setdefault((message.sender, message.port), message.grad)
        if outgoing:
            self._computed(run, state, outgoing, facts, now)
        stamped: list[tuple[str, BaseModel]] = []
        for name, out in outgoing:
            if isinstance(out, _ENDS):
                state.done = True
            if getattr(out, "run", None) != run:  # another run's report (an eviction): not this trace's
                stamped.append((name, out))
                continue
            changed = clock.advance()
            sent = clock.stamp()
            stamped.append((name, with_clock(out, sent)))
            facts.append(self._note("send", state, changed, now, (name, message_id(self.gate, sent))))
        kind = type(message)
        if kind is Release:
            state.done = True
        state.flush = state.done or kind is Probe or message.held or self.every_step  # held: a human's pace
        return run, stamped, facts

    def _computed(
        self, run: str, state: _Traced, outgoing: Sequence[tuple[str, BaseModel]], facts: list[Fact], now: int
    ) -> None:
        """The step's compute events, onto `facts`: one per forward value sent, one for the gradients."""
        grads_out: list[float] = []
        gradients = False
        for _, out in outgoing:
            if isinstance(out, Forward) and out.run == run:
                inputs = [state.inputs.get(port) for port in range(len(self.inputs))]
                extra = {"inputs": inputs, "value": out.value}
                facts.append(self._note("compute", state, state.clock.advance(), now, None, extra))
            elif isinstance(out, _GRADIENTS) and out.run == run:
                gradients = True
                if isinstance(out, Backward):
                    grads_out.append(out.grad)
        if gradients:
            extra = {"grad": math.fsum(state.grads.values()), "grads_out": grads_out}
            facts.append(self._note("compute", state, state.clock.advance(), now, None, extra))

    def faults(
        self, run: str, batch: Sequence[tuple[str, BaseModel]], planned: Sequence[tuple[float, BaseModel]]
    ) -> list[Fact]:
        """What the injector did to a step's messages (`planned`: (delay, message) of each copy sent).

        `batch`: the messages `step` has just stamped."""
        state = self._state(run)
        now = time.time_ns()
        described = [(message, fields) for name, message in batch if (fields := msg_fields(name, message)) is not None]
        sent_order = list(
            dict.fromkeys(fields["id"] for _, m in planned for message, fields in described if m is message)
        )
        planned_order = [fields["id"] for _, fields in described if fields["id"] in sent_order]
        facts = []
        clock = state.clock
        if sent_order != planned_order:
            facts.append(self._note("reorder", state, clock.advance(), now, None, {"order": sent_order}))
        for message, fields in described:
            delays = [wait for wait, m in planned if m is message]
            if not delays:
                facts.append(self._note("drop", state, clock.advance(), now, fields))
            elif len(delays) > 1:
                facts.append(
                    self._note("duplicate", state, clock.advance(), now, fields, {"note": f"{len(delays)} copies"})
                )
            for copy, delay in enumerate(delays, 1):
                if delay > 0:
                    extra: Event = {"delay_ms": delay * 1000}
                    if len(delays) > 1:  # which of a duplicated message's copies
                        extra["note"] = f"copy {copy} of {len(delays)}"
                    facts.append(self._note("delay", state, clock.advance(), now, fields, extra))
        return facts

    def flushes(self, run: str) -> bool:
        """Whether `batch` sends what the run's last step recorded, rather than holding it."""
        return self._state(run).flush

    def batch(self, run: str, facts: list[Fact]) -> list[tuple[str, BaseModel]]:
        """The step's events: held, or with everything held so far, the message(s) that carry them.

        Keeps `facts` (the list itself): the caller is done with it."""
        state = self._state(run)
        if state.held is None:
            held = facts
        else:
            held = state.held
            held += facts
        if not state.flush or not held:
            state.held = held or None
            return []
        state.held = None
        state.whole = True
        head: dict[str, Any] = {"type": "trace", "circuit": self.circuit, "sender": self.gate, "run": run}
        head["host"] = self.host
        name = topic(self.circuit, "trace", self.gate)
        return [(name, trusted(EncodedBatch, {"text": text}, _TEXT)) for text in _encoded(head, held)]


_TEXT = frozenset({"text"})
_DUPLICATE: Event = {"note": "duplicate"}


def _encoded(head: dict[str, Any], facts: list[Fact]) -> list[str]:
    """The batch as one JSON text, or as several of at most TRACE_BATCH_BYTES (a single event
    may exceed it: it goes alone), each starting with the whole vector clock."""
    text = to_json({**head, "events": facts})
    if len(text) <= TRACE_BATCH_BYTES or len(facts) == 1:
        return [text.decode()]
    half = len(facts) // 2
    first = facts[0][3]
    assert isinstance(first, list), "a batch starts with a whole vector"
    vc = first.copy()
    for fact in facts[1 : half + 1]:
        changed = fact[3]
        assert isinstance(changed, dict), "a batch has one whole vector, its first"
        vc += [0] * (max(changed) + 1 - len(vc))
        for i, count in changed.items():
            vc[i] = count
    kind, t_ns, lamport, _, _, msg, extra = facts[half]
    second = [(kind, t_ns, lamport, vc, True, msg, extra), *facts[half + 1 :]]
    return _encoded(head, facts[:half]) + _encoded(head, second)
