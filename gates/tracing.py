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

A gate keeps a run's events until its part of the run is over (it sent its gradients or its
report, failed the run, answered a probe or was told to release it) and then publishes them as
one TraceBatch on gatemesh/C/trace/G, *before* that step's own messages, on the same
connection; anything that happens at the gate later (a late copy arriving) is published at
once. One message per gate per run keeps a traced pass within 1.5x of a plain one
(bench/tracing.py). Because a gate's batch leaves before the messages that end its part,
every batch of a completed run reaches the orchestrator before the run's last report does.
Events still held by a gate whose host dies are lost with it. Untraced runs never reach this
module: the actor checks for a clock with one bytes search. In a held run (step mode,
gates/held.py) a gate publishes its events after every step: a human delivers each message.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from gates.clocks import Clock, Stamp
from gates.protocol import (
    MESSAGE_ADAPTER,
    Backward,
    ErrorReport,
    Feed,
    Forward,
    GradReport,
    Message,
    Probe,
    Release,
    RunId,
    Status,
    _Message,
    parse_topic,
    topic,
)

CLOCK_KEY = b'"clock":'
"""How the actor tells a traced message from an untraced one without parsing it."""
REMEMBER_RUNS = 1024
"""Traced runs whose clock a gate keeps (late duplicates still find theirs)."""

Real = Annotated[float, Field(allow_inf_nan=False)]
EventType = Literal[
    "send", "receive", "compute", "drop", "duplicate", "delay", "reorder", "cross", "host_lost", "timeout"
]
Phase = Literal["feed", "forward", "backward", "report", "probe", "release", "status", "error"]
PHASES: dict[str, Phase] = {
    "feed": "feed",
    "forward": "forward",
    "backward": "backward",
    "grad": "report",
    "probe": "probe",
    "release": "release",
    "status": "status",
    "error": "error",
}
"""Message type -> the phase of the pass it belongs to."""


class TraceMsg(BaseModel):
    """The message an event is about, with the number it carries."""

    model_config = ConfigDict(extra="forbid")  # not frozen: the orchestrator fills in `dest` (no copy)

    id: str = Field(description="sender:lamport-of-its-send: one id per message, shared by its copies")
    src: str
    dest: tuple[str, ...] = Field(default=(), description="every node the topic delivers it to")
    phase: Phase
    topic: str
    value: Real | None = None
    grad: Real | None = None
    port: int | None = None
    note: str = Field(default="", description="an error's code and reason, a status's state")


class TraceEvent(BaseModel):
    """One event of a traced run, as one line of a trace file."""

    model_config = ConfigDict(extra="forbid")  # not frozen: the orchestrator numbers it (no copy)

    seq: int = Field(default=0, ge=0, description="position in the trace (set by the orchestrator)")
    t_ns: int = Field(description="wall clock at the node where it happened, ns since the epoch")
    type: EventType
    run: RunId
    node: str = Field(description="gate id, 'orchestrator', or 'broker' for a crossing")
    host: str
    lamport: int = Field(ge=0)
    vc: dict[str, int]
    msg: TraceMsg | None = None
    inputs: tuple[Real | None, ...] | None = None
    value: Real | None = None
    grad: Real | None = None
    grads_out: tuple[Real, ...] | None = None
    delay_ms: Real | None = None
    order: tuple[str, ...] | None = None
    gates: tuple[str, ...] | None = None
    note: str = ""


class BatchedEvent(BaseModel):
    """A TraceEvent as a batch carries it: its run, node and host are the batch's."""

    model_config = ConfigDict(extra="forbid")

    t_ns: int
    type: EventType
    lamport: int = Field(ge=0)
    vc: dict[str, int]
    msg: TraceMsg | None = None
    inputs: tuple[Real | None, ...] | None = None
    value: Real | None = None
    grad: Real | None = None
    grads_out: tuple[Real, ...] | None = None
    delay_ms: Real | None = None
    order: tuple[str, ...] | None = None
    note: str = ""


class TraceBatch(_Message):
    """A gate's new events of one traced run, on gatemesh/C/trace/G."""

    type: Literal["trace"] = "trace"
    run: RunId
    host: str = Field(description="the host the gate runs on")
    events: tuple[BatchedEvent, ...]

    def trace_events(self) -> list[TraceEvent]:
        """The events, each with the batch's run, node (its sender) and host."""
        shared = {"run": self.run, "node": self.sender, "host": self.host}
        return [TraceEvent.model_validate({**event.model_dump(exclude_none=True), **shared}) for event in self.events]


def message_id(sender: str, stamp: Stamp) -> str:
    return f"{sender}:{stamp.lamport}"


Event = dict[str, Any]
"""A TraceEvent as the gate builds it: plain data (cheaper than a model, on every traced step),
validated as a TraceEvent where it is received."""


def msg_fields(topic_name: str, message: Message | BaseModel, dest: tuple[str, ...] = ()) -> Event | None:
    """The TraceMsg fields of a stamped run message (None for anything else)."""
    if not isinstance(message, _Message) or message.clock is None:
        return None
    fields: Event = {"id": message_id(message.sender, message.clock), "src": message.sender, "dest": dest}
    match message:
        case Feed() | Forward():
            fields["value"] = message.value
        case Backward():
            fields["grad"], fields["port"] = message.grad, message.port
        case GradReport():
            fields["grad"] = message.grad
        case ErrorReport():
            fields["note"] = f"{message.code}: {message.message}"
        case Status():
            fields["note"] = message.state.replace("_", " ")
        case Probe() | Release():
            pass
        case _:
            return None
    fields["phase"] = PHASES[message.type]
    fields["topic"] = topic_name
    return fields


def describe(topic_name: str, message: Message | BaseModel, dest: tuple[str, ...] = ()) -> TraceMsg | None:
    """The TraceMsg of a stamped run message (None for anything else)."""
    fields = msg_fields(topic_name, message, dest)
    return None if fields is None else TraceMsg.model_validate(fields)


class EncodedBatch(BaseModel):
    """A TraceBatch the gate encoded itself (json.dumps of plain data): what the link publishes."""

    model_config = ConfigDict(frozen=True)

    text: str

    def model_dump_json(self, *args: Any, **kwargs: Any) -> str:
        return self.text


@dataclass
class _Traced:
    """What a gate remembers of one traced run."""

    clock: Clock
    inputs: dict[int, float] = field(default_factory=dict)
    grads: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    held: list[Event] = field(default_factory=list)
    done: bool = False
    """The gate's part of the run is over: from now on every event is published at once."""
    flush: bool = False
    """Publish what is held with this step's messages."""


class GateTracer:
    """One gate's clocks and events, over all its traced runs."""

    def __init__(self, gate: str, inputs: Sequence[str], circuit: str, host: str) -> None:
        self.gate = gate
        self.inputs = tuple(inputs)
        self.circuit = circuit
        self.host = host
        self._runs: OrderedDict[str, _Traced] = OrderedDict()

    def _state(self, run: str) -> _Traced:
        state = self._runs.get(run)
        if state is None:
            state = self._runs[run] = _Traced(Clock(self.gate))
            while len(self._runs) > REMEMBER_RUNS:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run)
        return state

    def _event(self, kind: EventType, run: str, stamp: Stamp, **fields: Any) -> Event:
        """An event without the fields its batch carries once for all (run, node, host)."""
        event: Event = {"t_ns": time.time_ns(), "type": kind, "lamport": stamp.lamport, "vc": stamp.vc}
        event.update(fields)
        return event

    def step(
        self, topic_name: str, payload: bytes, outgoing: Sequence[tuple[str, BaseModel]]
    ) -> tuple[str | None, list[tuple[str, BaseModel]], list[Event]]:
        """(run, the outgoing messages stamped, the events) for one message the core just handled."""
        try:
            message = MESSAGE_ADAPTER.validate_json(payload)
        except ValidationError:
            return None, list(outgoing), []
        run = getattr(message, "run", None)
        traced = msg_fields(topic_name, message)
        if run is None or traced is None or message.clock is None:
            return None, list(outgoing), []
        state = self._state(run)
        receipt = self._event("receive", run, state.clock.receive(message.clock), msg=traced)
        if traced["id"] in state.seen:
            receipt["note"] = "duplicate"
        state.seen.add(traced["id"])
        events = [receipt]
        self._remember(state, message)
        events += self._computed(run, state, outgoing)
        stamped: list[tuple[str, BaseModel]] = []
        for name, out in outgoing:
            if getattr(out, "run", None) != run:  # another run's report (an eviction): not this trace's
                stamped.append((name, out))
                continue
            stamp = state.clock.send()
            out = out.model_copy(update={"clock": stamp})
            stamped.append((name, out))
            events.append(self._event("send", run, stamp, msg=msg_fields(name, out)))
        ends = any(isinstance(out, Backward | GradReport | ErrorReport) for _, out in outgoing)
        state.done = state.done or ends or isinstance(message, Release)
        state.flush = state.done or isinstance(message, Probe) or message.held  # a held run goes at a human's pace
        return run, stamped, events

    def _remember(self, state: _Traced, message: Message) -> None:
        match message:
            case Forward(sender=sender, value=value):
                for port, source in enumerate(self.inputs):
                    if source == sender:
                        state.inputs.setdefault(port, value)
            case Backward(sender=sender, port=port, grad=grad):
                state.grads.setdefault((sender, port), grad)

    def _computed(self, run: str, state: _Traced, outgoing: Sequence[tuple[str, BaseModel]]) -> list[Event]:
        events = []
        for _, out in outgoing:
            if isinstance(out, Forward) and out.run == run:
                inputs = [state.inputs.get(port) for port in range(len(self.inputs))]
                events.append(self._event("compute", run, state.clock.tick(), inputs=inputs, value=out.value))
        sent = [out for _, out in outgoing if isinstance(out, Backward | GradReport) and out.run == run]
        if sent:
            total = math.fsum(state.grads.values())
            grads_out = [out.grad for out in sent if isinstance(out, Backward)]
            events.append(self._event("compute", run, state.clock.tick(), grad=total, grads_out=grads_out))
        return events

    def faults(
        self, run: str, batch: Sequence[tuple[str, BaseModel]], planned: Sequence[tuple[float, BaseModel]]
    ) -> list[Event]:
        """What the injector did to a step's messages (`planned`: (delay, message) of each copy sent)."""
        state = self._state(run)
        described = [(message, fields) for name, message in batch if (fields := msg_fields(name, message))]
        sent_order = list(
            dict.fromkeys(fields["id"] for _, m in planned for message, fields in described if m is message)
        )
        planned_order = [fields["id"] for _, fields in described if fields["id"] in sent_order]
        events = []
        if sent_order != planned_order:
            events.append(self._event("reorder", run, state.clock.tick(), order=sent_order))
        for message, fields in described:
            delays = [wait for wait, m in planned if m is message]
            if not delays:
                events.append(self._event("drop", run, state.clock.tick(), msg=fields))
            elif len(delays) > 1:
                copies = f"{len(delays)} copies"
                events.append(self._event("duplicate", run, state.clock.tick(), msg=fields, note=copies))
            for copy, delay in enumerate(delays, 1):
                if delay > 0:
                    tick = state.clock.tick()
                    events.append(
                        self._event("delay", run, tick, msg=fields, delay_ms=delay * 1000, note=f"copy {copy}")
                    )
        return events

    def batch(self, run: str, events: list[Event]) -> list[tuple[str, BaseModel]]:
        """The step's events: held, or with everything held so far, the message that carries them."""
        state = self._state(run)
        state.held += events
        if not state.flush or not state.held:
            return []
        held, state.held = state.held, []
        data: dict[str, Any] = {"type": "trace", "circuit": self.circuit, "sender": self.gate, "run": run}
        data["host"] = self.host
        data["events"] = held
        return [(topic(self.circuit, "trace", self.gate), EncodedBatch(text=to_json(data).decode()))]


def is_traced(payload: bytes) -> bool:
    return CLOCK_KEY in payload


def parse_trace_topic(name: str) -> str | None:
    """The gate of a trace topic, or None."""
    parsed = parse_topic(name)
    return parsed[2] if parsed is not None and parsed[1] == "trace" else None
