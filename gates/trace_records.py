"""What a trace is made of: its events, the messages they are about, and a gate's batch of them.

A TraceEvent is one line of a trace file (orchestrator/trace.py). A gate sends its events of a
run as a TraceBatch (gates/tracing.py makes them): each event a BatchedFact, an array, its
vector clock whole or as the entries changed, its message named by (topic, id); the
orchestrator's recorder expands a batch back into TraceEvents, reading each named message off
its crossing of the broker (TraceBatch.trace_events). docs/PROTOCOL.md (Tracing) has the format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gates.clocks import MAX_COUNT, MAX_NODES, Count, Stamp, named
from gates.protocol import (
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
)

CLOCK_KEY = b'"clock":'
"""How a traced message's payload is told from an untraced one without parsing it (the
recorder, for the crossings it keeps undecoded; a gate reads `clock` from what its core decoded)."""


Real = Annotated[float, Field(allow_inf_nan=False)]
EventType = Literal[
    "send", "receive", "compute", "drop", "duplicate", "delay", "reorder", "cross", "host_lost", "timeout"
]
Phase = Literal["feed", "forward", "backward", "report", "probe", "release", "status", "error"]
ENDED_EARLY = "nothing is left to deliver"
"""How a timeout event's note begins when a stepped run's wait ended before its time: not a timeout."""
STEP_MODE_DROP = "dropped in step mode"
"""The note of a drop a student made: the orchestrator's event, as the gates never hear of it."""
STEP_MODE_DUPLICATE = "duplicated in step mode"
"""The note of a duplicate a student made (the orchestrator's event): one copy went, a second waits."""
STEP_MODE_COPY_DROP = "second copy dropped in step mode"
"""The note of a drop of a duplicate's second copy: the receiver keeps the first, nothing is lost."""


UNSEEN = "its crossing was not seen"
"""The note of a message a gate names whose crossing the recorder has not read (a tap
reconnecting, a message lost at QoS 0); the recorder fills it in if the crossing comes later."""


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
    lamport: int = Field(ge=0, le=MAX_COUNT)
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
    line: int | None = Field(
        default=None,
        ge=1,
        description="its number among --explain's sentences (messages that crossed and faults, in the order "
        "the orchestrator learned of them): `draw circuit --message K` finds line K by it",
    )


class FactFields(BaseModel):
    """What an event says besides its clocks and its message (a compute's numbers, a fault's).

    TraceEvent's fields again on purpose: only these may come from a gate, so a batch cannot
    set another event's run, node, host or place in the trace."""

    model_config = ConfigDict(extra="forbid")

    inputs: tuple[Real | None, ...] | None = None
    value: Real | None = None
    grad: Real | None = None
    grads_out: tuple[Real, ...] | None = None
    delay_ms: Real | None = None
    order: tuple[str, ...] | None = None
    note: str = ""


MsgRef = tuple[str, str]
"""(topic, message id): a message the broker carried, as a gate's send or receive names it."""
BatchedFact = tuple[
    EventType,
    int,
    Count,
    Annotated[list[Count], Field(max_length=MAX_NODES)] | dict[Annotated[int, Field(ge=0, lt=MAX_NODES)], Count],
    bool,
    MsgRef | TraceMsg | None,
    FactFields | None,
]
"""An event as a batch carries it: [type, t_ns, lamport, clock, whole, msg, fields]. Its run,
node and host are the batch's; `clock` is its whole vector clock (a list by node number,
gates/clocks.py) if `whole`, else the entries changed since the event before (an object, node
number -> count); `msg` names a message that crossed the broker (its number is
read off the crossing) or, for a fault's, has its fields."""


class TraceBatch(_Message):
    """A gate's new events of one traced run, on gatemesh/C/trace/G."""

    type: Literal["trace"] = "trace"
    run: RunId
    host: str = Field(description="the host the gate runs on")
    events: tuple[BatchedFact, ...]

    @field_validator("events")
    @classmethod
    def _clocks_whole_then_changed(cls, events: tuple[BatchedFact, ...]) -> tuple[BatchedFact, ...]:
        for i, (_, _, _, clock, whole, _, _) in enumerate(events):
            if i == 0 and not whole:
                raise ValueError("the first event of a batch must have its whole vector clock (whole = true)")
            if whole != isinstance(clock, list):
                raise ValueError(
                    f"event {i}: a whole vector clock is a list (by node number), the entries "
                    "changed an object (node number -> count); `whole` says which"
                )
        return events

    def trace_events(
        self, names: Sequence[str], crossed: Mapping[str, TraceMsg] | None = None, unseen: str = UNSEEN
    ) -> list[TraceEvent]:
        """The events, each with the batch's run, node (its sender) and host, its whole vc by
        node name (`names`: every node by number), and its message: `crossed` has the run's
        messages seen so far by id (the crossings, the faults' fields); one not there is told
        by its topic and id only, with the note `unseen`. ValueError if a clock names a node
        number the deployment lacks."""
        shared = {"run": self.run, "node": self.sender, "host": self.host}
        events = []
        vc: dict[str, int] = {}
        for kind, t_ns, lamport, clock, _, msg, extra in self.events:
            if isinstance(clock, list):
                vc = named(clock, names)
            else:
                if clock and max(clock) >= len(names):
                    raise ValueError(f"a vector clock names node {max(clock)}, of {len(names)} nodes")
                vc = {**vc, **{names[i]: count for i, count in clock.items()}}
            fields: dict[str, Any] = {"t_ns": t_ns, "type": kind, "lamport": lamport, **shared}
            if extra is not None:
                fields.update((name, getattr(extra, name)) for name in extra.model_fields_set)
            event = trace_event(fields, vc)
            if isinstance(msg, tuple):
                event.msg = _named(*msg, crossed or {}, unseen)
            else:
                event.msg = msg
            events.append(event)
        return events


def _named(topic_name: str, msg_id: str, crossed: Mapping[str, TraceMsg], unseen: str) -> TraceMsg:
    """The TraceMsg of a message a gate names by topic and id."""
    seen = crossed.get(msg_id)
    if seen is None:
        parsed = parse_topic(topic_name)
        phase = _PHASE_OF_TOPIC.get(parsed[1] if parsed is not None else "", "error")
        return TraceMsg(id=msg_id, src=msg_id.rpartition(":")[0], phase=phase, topic=topic_name, note=unseen)
    return at_topic(seen, topic_name)


def at_topic(seen: TraceMsg, topic_name: str) -> TraceMsg:
    """The crossed message `seen` as an event on `topic_name` names it (sent to a held topic,
    delivered on its own)."""
    return seen if seen.topic == topic_name else seen.model_copy(update={"topic": topic_name})


_PHASE_OF_TOPIC: dict[str, Phase] = {
    "feed": "feed",
    "fwd": "forward",
    "grad": "backward",
    "report": "report",
    "status": "status",
    "error": "error",
    "control": "release",
}


def trace_event(fields: dict[str, Any], vc: dict[str, int]) -> TraceEvent:
    """A TraceEvent of `fields` (validated) and `vc`, which was validated where it came from (a
    message's clock, a batch's clocks, the orchestrator's own Clock): checking every
    entry of a 1,000-entry vector again, for every event of a trace, would cost more than the
    rest of the trace."""
    event = TraceEvent.model_validate({**fields, "vc": {}})
    event.vc = vc
    return event


def message_id(sender: str, stamp: Stamp) -> str:
    return f"{sender}:{stamp.lamport}"


Event = dict[str, Any]
"""A TraceEvent as the gate builds it: plain data (cheaper than a model, on every traced step),
validated as a TraceEvent where it is received."""


def msg_fields(
    topic_name: str, message: Message | BaseModel, dest: tuple[str, ...] = (), *, stamped: bool = True
) -> Event | None:
    """The TraceMsg fields of a stamped run message (None for anything else); with
    `stamped=False` of an unstamped one too, with no id (the untraced runs --explain tells)."""
    phase = PHASE_OF.get(type(message))
    if phase is None or not isinstance(message, _Message) or (message.clock is None and stamped):
        return None
    msg_id = "" if message.clock is None else message_id(message.sender, message.clock)
    fields: Event = {"id": msg_id, "src": message.sender, "dest": dest}
    if isinstance(message, _VALUES):
        fields["value"] = message.value
    elif isinstance(message, Backward):
        fields["grad"], fields["port"] = message.grad, message.port
    elif isinstance(message, GradReport):
        fields["grad"] = message.grad
    elif isinstance(message, ErrorReport):
        fields["note"] = f"{message.code}: {message.message}"
    elif isinstance(message, Status):
        fields["note"] = message.state.replace("_", " ")
    fields["phase"] = phase
    fields["topic"] = topic_name
    return fields


_VALUES = (Forward, Feed)
PHASE_OF: dict[type[BaseModel], Phase] = {
    Feed: "feed",
    Forward: "forward",
    Backward: "backward",
    GradReport: "report",
    Probe: "probe",
    Release: "release",
    Status: "status",
    ErrorReport: "error",
}
"""The run messages a trace describes, and the phase of the pass each belongs to."""


def describe(topic_name: str, message: Message | BaseModel, dest: tuple[str, ...] = ()) -> TraceMsg | None:
    """The TraceMsg of a stamped run message (None for anything else)."""
    fields = msg_fields(topic_name, message, dest)
    return None if fields is None else TraceMsg.model_validate(fields)


def parse_trace_topic(name: str) -> str | None:
    """The gate of a trace topic, or None."""
    parsed = parse_topic(name)
    return parsed[2] if parsed is not None and parsed[1] == "trace" else None


def loses_its_message(e: TraceEvent) -> bool:
    """A drop that loses its message's number: any but a student's drop of a duplicate's second
    copy (the receiver has the first)."""
    return e.type == "drop" and e.note != STEP_MODE_COPY_DROP
