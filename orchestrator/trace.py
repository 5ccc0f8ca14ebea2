"""A trace file: one JSON line per event of a traced run, after a header line.

    {"type": "header", "version": 1, "circuit": {...}, "run": "...", "inputs": {...}, "seed": 7, ...}
    {"seq": 1, "t_ns": ..., "type": "send", "run": "...", "node": "orchestrator", "lamport": 1, "msg": {...}, ...}
    ...

The events are gates/trace_records.py's TraceEvent (recorded by the gates and the orchestrator, see
orchestrator/recorder.py), in an order that respects happens-before: `seq` counts from 1.
Everything that reads a trace (the pictures in viz/, the ShiViz export, --explain) reads it
through `read_trace`, which validates every line and names the line that is wrong.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gates.protocol import BROKER, MESSAGE_ADAPTER, ORCHESTRATOR
from gates.trace_records import TraceEvent
from gates.transport import encode
from orchestrator.circuit import Circuit
from orchestrator.errors import InputError
from orchestrator.result import RunResult

MAX_TRACE_BYTES = 256 * 1024 * 1024


class TraceError(InputError):
    """A trace file that cannot be read, or that a picture or export cannot be made from."""


class RunRecord(BaseModel):
    """One run of a trace: its inputs and how it ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    inputs: dict[str, float]
    result: RunResult | None = None
    error: str = ""


class TraceHeader(BaseModel):
    """The first line of a trace file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["header"] = "header"
    version: Literal[1] = 1
    circuit: Circuit
    deployment: str
    run: str | None = Field(description="the last run traced: the one pictures show unless told otherwise")
    inputs: dict[str, float] = Field(description="the last run's inputs")
    seed: int | None = Field(default=None, description="the fault injector's seed, when it is known")
    faults: str = ""
    placement: dict[str, str] = Field(description="gate -> the host it runs on")
    runs: tuple[RunRecord, ...] = ()


class Trace(BaseModel):
    """A whole trace: its header and its events in `seq` order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    header: TraceHeader
    events: tuple[TraceEvent, ...]

    @property
    def circuit(self) -> Circuit:
        return self.header.circuit

    def run_id(self, run: str | None = None) -> str:
        """`run`, checked to be in this trace, or the header's (last) run."""
        chosen = run or self.header.run
        if chosen is None:
            raise TraceError("the trace records no run")
        if chosen not in {r.run for r in self.header.runs} and all(e.run != chosen for e in self.events):
            raise TraceError(f"run {chosen!r} is not in this trace (runs: {', '.join(self.runs())})")
        return chosen

    def cut_short(self, run: str | None = None) -> str:
        """Why the events of a run the header says finished look incomplete ('' if they do not):
        every leaf's gradient report reaches the orchestrator before a run finishes, so a file
        without them was cut (by `head`, say) and its pictures would show the pass unfinished."""
        chosen = self.run_id(run)
        record = next((r for r in self.header.runs if r.run == chosen), None)
        if record is None or record.result is None:
            return ""
        reported = {e.msg.src for e in self.of_run(chosen) if e.type == "receive" and e.msg and e.msg.phase == "report"}
        leaves = len(self.circuit.leaves)
        if len(reported) >= leaves:
            return ""
        return (
            f"run {chosen} finished (value {record.result.value:g}), but this trace holds {len(reported)} of its "
            f"{leaves} gradient reports: the file looks cut short, and what is drawn is only what it holds"
        )

    def runs(self) -> list[str]:
        return [r.run for r in self.header.runs] or list(dict.fromkeys(e.run for e in self.events))

    def of_run(self, run: str | None = None) -> list[TraceEvent]:
        chosen = self.run_id(run)
        return [e for e in self.events if e.run == chosen]

    def shown_received(self, run: str | None = None) -> dict[tuple[str, str], TraceEvent]:
        """(message id, receiver) -> the crossing that shows the receiver had the message, for
        the messages to a gate on a lost host whose receipt the trace lacks (the host went
        before the gate sent its events): a gate sends its value only once every input's value has come,
        and its gradients only once every consumer's have, so its own value (or gradient)
        crossing the broker later shows it received what it waited for."""
        events = self.of_run(run)
        lost = {gate for e in events if e.type == "host_lost" for gate in e.gates or ()}
        received = {(e.msg.id, e.node) for e in events if e.type == "receive" and e.msg is not None}
        sent_on: dict[tuple[str, str], TraceEvent] = {}
        for e in events:
            if e.type == "cross" and e.msg is not None:
                sent_on.setdefault((e.msg.src, _LEG.get(e.msg.phase, "")), e)
        shown: dict[tuple[str, str], TraceEvent] = {}
        for e in events:
            if e.type != "cross" or e.msg is None or e.msg.phase not in ("feed", "forward", "backward"):
                continue
            for reader in set(e.msg.dest) & lost:
                proof = sent_on.get((reader, _LEG[e.msg.phase]))
                if (e.msg.id, reader) not in received and proof is not None and proof.seq > e.seq:
                    shown.setdefault((e.msg.id, reader), proof)
        return shown

    def placement(self) -> dict[str, str]:
        """gate -> host, every gate included (in-process gates run on 'local')."""
        return {g.id: self.header.placement.get(g.id, "local") for g in self.circuit.gates}

    def replay(self, run: str | None = None) -> RunResult:
        """The run's value and gradients, read from its messages alone (the output's forward value
        as the orchestrator received it, each input's reported gradient)."""
        value: float | None = None
        grads: dict[str, float] = {}
        for e in self.of_run(run):
            if e.type != "receive" or e.node != ORCHESTRATOR or e.msg is None:
                continue
            if e.msg.phase == "forward" and e.msg.src == self.circuit.output and e.msg.value is not None:
                value = e.msg.value if value is None else value
            elif e.msg.phase == "report" and e.msg.grad is not None:
                grads.setdefault(e.msg.src, e.msg.grad)
        if value is None or any(name not in grads for name in self.circuit.inputs):
            raise TraceError("the run did not complete: its value or a gradient is not in the trace")
        return RunResult(value=value, grads={name: grads[name] for name in self.circuit.inputs})


def dump_lines(trace: Trace) -> Iterator[str]:
    yield trace.header.model_dump_json()
    for event in trace.events:
        yield event.model_dump_json(exclude_none=True, exclude_defaults=False)


def write_trace(trace: Trace, path: Path) -> None:
    try:
        path.write_text("".join(line + "\n" for line in dump_lines(trace)), encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot write the trace: {exc}") from exc


def read_trace(path: Path) -> Trace:
    """Read and validate a trace file; every problem is a TraceError naming the file and line."""
    try:
        if path.stat().st_size > MAX_TRACE_BYTES:
            raise TraceError(f"{path}: larger than {MAX_TRACE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from exc
    return parse_trace(text, str(path))


def parse_trace(text: str, source: str = "<trace>") -> Trace:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise TraceError(f"{source}: empty; a trace starts with its header line")
    try:
        header = TraceHeader.model_validate_json(lines[0][1])
    except ValidationError as exc:
        seems = _looks_like(text, lines[0][1])  # what it is, if it says: then the parser's words add nothing
        detail = "" if seems else f" (line {lines[0][0]}: {_problems(exc)})"
        raise TraceError(
            f"{source}: not a trace{seems}: a trace is JSON lines, the first the header "
            f"`gatemesh run ... --trace FILE` writes{detail}"
        ) from None
    events = []
    nodes = {*header.circuit.nodes, BROKER}
    for number, line in lines[1:]:
        try:
            event = TraceEvent.model_validate_json(line)
        except ValidationError as exc:
            raise TraceError(f"{source}: line {number}: not a trace event: {_problems(exc)}") from None
        if stranger := _stranger(event, nodes):
            raise TraceError(
                f"{source}: line {number}: {stranger}, which is not a node of the header's circuit "
                "(an event of another trace?)"
            )
        events.append(event)
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        wrong = next(i for i, s in enumerate(seqs, 1) if s != i)
        raise TraceError(f"{source}: event {wrong} has seq {seqs[wrong - 1]}: seq must count 1, 2, 3, ...")
    return Trace(header=header, events=tuple(events))


def _looks_like(text: str, first: str) -> str:
    """What a file that is not a trace seems to be, if it says: a circuit file (most often), a
    trace whose header line is gone, a ShiViz log; or a first line that is not JSON at all."""
    if first.startswith("(?<host>"):
        return " but a ShiViz log (`gatemesh export shiviz` writes one from a trace)"
    with contextlib.suppress(ValueError):
        whole = json.loads(text)
        if isinstance(whole, dict) and "gates" in whole:
            return " but a circuit file (draw it with `gatemesh draw circuit FILE`)"
    try:
        TraceEvent.model_validate_json(first)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return ": its first line is not JSON"
        return ""
    return " but trace events without their header: its first line is an event (the file was cut?)"


def _stranger(event: TraceEvent, nodes: set[str]) -> str:
    """What in `event` names a node outside `nodes` ('' if nothing does)."""
    if event.node not in nodes:
        return f"its node is {event.node!r}"
    if unknown := sorted(set(event.vc) - nodes):
        return f"its vector clock has an entry for {unknown[0]!r}"
    if event.msg is not None and (unknown := sorted({event.msg.src, *event.msg.dest} - nodes)):
        return f"its message names {unknown[0]!r}"
    return ""


def _problems(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in errors[:3])


def causal_order(events: list[TraceEvent]) -> list[TraceEvent]:
    """The events in the order they happened: by the wall clock where each happened, except where
    that would contradict happens-before (clocks of different machines drift), and then causally.

    Kahn's algorithm over the edges of happens-before that the trace shows directly (each node's
    own events in the order of its own vector-clock entry; a send before every copy's crossing
    and receipt, and a node's k-th receipt of a message after the message's k-th crossing: a
    duplicate's second copy is not received before it crossed), always taking the ready event
    with the earliest `t_ns`. Gates send their events in batches, so the order of arrival says
    little. Events are renumbered `seq` 1, 2, 3.
    """
    preds: list[set[int]] = [set() for _ in events]
    by_node: dict[tuple[str, str], list[int]] = {}
    sends: dict[tuple[str, str], int] = {}
    crossings: dict[tuple[str, str], list[int]] = {}
    receipts: dict[tuple[str, str, str], list[int]] = {}
    for i, e in enumerate(events):
        if e.node != BROKER:
            by_node.setdefault((e.run, e.node), []).append(i)
        if e.type == "send" and e.msg is not None:
            sends[(e.run, e.msg.id)] = i
        elif e.type == "cross" and e.msg is not None:
            crossings.setdefault((e.run, e.msg.id), []).append(i)
        elif e.type == "receive" and e.msg is not None:
            receipts.setdefault((e.run, e.node, e.msg.id), []).append(i)
    for (_, node), indices in by_node.items():
        ordered = sorted(indices, key=lambda i: (events[i].vc.get(node, 0), i))
        for before, after in itertools.pairwise(ordered):
            preds[after].add(before)
    for i, e in enumerate(events):
        if e.type in ("receive", "cross") and e.msg is not None:
            send = sends.get((e.run, e.msg.id))
            if send is not None and send != i:
                preds[i].add(send)
    for (run, node, msg_id), received in receipts.items():  # the orchestrator may read one before its tap does
        crossed = sorted(crossings.get((run, msg_id), []), key=lambda i: (events[i].t_ns, i))  # the tap's order
        if crossed:
            in_turn = sorted(received, key=lambda i: (events[i].vc.get(node, 0), i))
            for k, i in enumerate(in_turn):
                preds[i].add(crossed[min(k, len(crossed) - 1)])
    when = [e.t_ns for e in events]
    return [events[i].model_copy(update={"seq": seq}) for seq, i in enumerate(_kahn(preds, when), 1)]


def _kahn(preds: list[set[int]], when: list[int]) -> list[int]:
    succs: list[list[int]] = [[] for _ in preds]
    waiting = [len(p) for p in preds]
    for i, p in enumerate(preds):
        for j in p:
            succs[j].append(i)
    ready = [(when[i], i) for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (when[j], j))
    if len(order) < len(preds):  # a cycle: clocks that contradict each other; keep the arrival order
        order += [i for i in range(len(preds)) if i not in set(order)]
    return order


def as_sent(trace: Trace, send: TraceEvent) -> str:
    """A send's message as it crossed the broker: its topic, then its JSON payload, rebuilt from
    the trace (the deployment, the run, the sender's clock by node number). An error or a
    status answer, whose every field the trace does not keep, as the trace records it."""
    m = send.msg
    if m is None:
        return "{}"
    numbers = {name: i for i, name in enumerate(trace.circuit.nodes)}
    vc = [0] * (max((numbers[n] for n in send.vc if n in numbers), default=0) + 1)
    for name, count in send.vc.items():
        if name in numbers:
            vc[numbers[name]] = count
    fields: dict[str, object] = {"circuit": trace.header.deployment, "sender": m.src, "run": send.run}
    fields["clock"] = {"lamport": send.lamport, "vc": vc}
    match m.phase:
        case "feed" | "forward":
            fields["value"] = m.value
        case "backward":
            fields.update(port=m.port, grad=m.grad)
        case "report":
            fields["grad"] = m.grad
        case "probe" | "release":
            pass
        case _:
            return dumps_msg(send)
    try:
        message = MESSAGE_ADAPTER.validate_python({"type": _TYPE_OF[m.phase], **fields})
    except ValidationError:  # its number is not in the trace (yet): held in step mode, not crossed
        return dumps_msg(send)
    return f"{m.topic}\n{encode(message).decode()}"


_TYPE_OF = {phase: phase for phase in ("feed", "forward", "backward", "probe", "release")} | {"report": "grad"}
"""A message's `type` by its phase in a trace."""


_LEG = {"feed": "forward", "forward": "forward", "backward": "backward", "report": "backward"}
"""The leg of a pass a message belongs to: a gate's messages of one leg wait for all it receives in that leg."""


def dumps_msg(event: TraceEvent) -> str:
    """The whole message of an event, as one line of JSON (an arrow's hover text)."""
    return json.dumps(event.msg.model_dump(mode="json", exclude_none=True) if event.msg else {}, sort_keys=False)
