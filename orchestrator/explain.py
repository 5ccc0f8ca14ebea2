"""`--explain`: every message of a run, as it crosses the broker, as a sentence a student can follow.

The gates say nothing about why they send what they send; the explainer knows the circuit
and hears every message (a traced run's `cross` events, or an untraced run's messages, both
read as the trace's TraceMsg), so it can retell each gate's step: the values it got, what it
computed (written as `gates.ops` writes each op), the local gradients (from the same table
the gates use) and where the results went.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from gates import ops
from gates.protocol import ORCHESTRATOR, Message, parse_topic
from gates.trace_records import TraceEvent, TraceMsg, loses_its_message, msg_fields
from orchestrator.circuit import Circuit


def num(value: float) -> str:
    return f"{value:.6g}"


def join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_STANDING = {
    "unknown": "unknown: it holds nothing of this run (it never heard of it, or has forgotten it)",
    "waiting inputs": "waiting for an input's value",
    "waiting grads": "it sent its value and waits for gradients",
    "finished": "finished: it has done its part",
}
"""What a gate's answer to a probe (its Status) says, in words."""


TOLD_LATE = 0.1
"""Seconds after which a gate's fault is told as late (its sentence comes after later ones)."""


def numbered(event: TraceEvent) -> bool:
    """Whether --explain gives `event` a numbered sentence: a message that crossed the broker, a
    drop, a delay, a reorder, a host lost, a timeout (`draw circuit --message K` counts the same).
    A student's drop of a duplicate's second copy loses nothing: the page says it, unnumbered."""
    if event.type == "cross" or loses_its_message(event):
        return event.msg is not None
    return event.type in ("delay", "reorder", "host_lost", "timeout")


class Explainer:
    """Turns the messages of runs over one circuit into numbered sentences, in arrival order."""

    def __init__(
        self, circuit: Circuit, placement: dict[str, str] | None = None, duplicated_by: str = "the fault injector"
    ) -> None:
        self.circuit = circuit
        self.duplicated_by = duplicated_by
        """Who makes second copies: the fault injector, or also a student in step mode."""
        self.placement = placement or {}
        """gate -> host: when given, each line starts with where its sender runs."""
        self.count = 0
        self._values: dict[str, dict[str, float]] = defaultdict(dict)
        self._grads_in: dict[str, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
        self._told_backward: dict[tuple[str, str], int] = {}
        """(run, gate) whose backward step a sentence told -> that sentence's number."""
        self._told_forward: dict[tuple[str, str], int] = {}
        """(run, gate) whose forward step a fault told before the value crossed -> that sentence's number."""
        self._told_reports: dict[tuple[str, str], int] = {}
        """(run, gate) whose report's step a fault told before the report crossed."""
        self.first_id = ""
        """The first message id a sentence showed ("x:4"): `id_note` says what one is."""
        self._late_said: set[str] = set()
        """The reasons for telling a fault late said so far: each is said once, then only that it is late."""
        self._told: dict[tuple[str, str], int] = {}
        """(run, message id) of every message told -> its sentence's number: a second copy is told
        as one, and counts for nothing; a fault told after its message says so."""
        self._copies: dict[tuple[str, str], list[int]] = {}
        """(run, message id) -> the sentences of its second and later copies' crossings."""
        self._held: dict[tuple[str, str], TraceMsg] = {}
        """(run, message id) of each message a fault injector was told to hold back and that has
        not crossed yet: if its gate's host is lost meanwhile, the message went with it."""

    def label(self, gate: str) -> str:
        """'x' for an input, 'add(q)' for any other gate, as the notes draw them."""
        if gate == ORCHESTRATOR:
            return "the orchestrator"
        g = self.circuit.by_id.get(gate)
        return gate if g is None or ops.OPS[g.op].fed else f"{g.op}({gate})"

    def explain(self, topic_name: str, message: Message) -> str:
        """The next sentence for a message heard on the broker (an untraced run's)."""
        fields = msg_fields(topic_name, message, stamped=False)
        if fields is None:
            self.count += 1
            return self._numbered(message.sender, f"{message.sender} sends a {message.type} message")
        return self.tell(getattr(message, "run", ""), TraceMsg.model_validate(fields))

    def tell(self, run: str, msg: TraceMsg) -> str:
        """The next numbered sentence: what the message of a trace event says and why it was sent."""
        self.count += 1
        if msg.id and (run, msg.id) in self._told:
            self._copies.setdefault((run, msg.id), []).append(self.count)
            to_orchestrator = msg.phase in ("report", "status", "error") or msg.dest == (ORCHESTRATOR,)
            rule = (
                "the orchestrator takes the first copy of each message"
                if to_orchestrator
                else "a gate takes one message per sender and port in a run"
            )
            return self._numbered(
                msg.src,
                f"a second copy of {self.label(msg.src)}'s {msg.phase} message ({self._id(msg.id)}) crosses the broker "
                f"({self.duplicated_by} duplicated it); it changes nothing: {rule}",
            )
        if msg.id:
            self._told[run, msg.id] = self.count
            self._held.pop((run, msg.id), None)
        return self._numbered(msg.src, self._sentence(run, msg))

    def dropped(self, msg: TraceMsg, run: str = "", late: float | None = None, *, by_student: bool = False) -> str:
        """The next numbered sentence, for a message the fault injector (or, `by_student`, a
        student in step mode) dropped, with the step that made it if no crossing has told that
        step yet (a forward value's never is: it is the step's only message). `late`: as fault's."""
        self.count += 1
        to = f" to {join([self.label(d) for d in msg.dest])}" if msg.dest else ""
        if msg.phase == "backward" and any((msg.src, d) in self.circuit.read_twice for d in msg.dest):
            to += f" (as its input {(msg.port or 0) + 1})"  # x*x: which of its two gradients to x
        what = f"{self.label(msg.src)}'s {msg.phase} message ({self._id(msg.id)}){to}"
        dropped = f"you drop {what} in step mode" if by_student else f"the fault injector drops {what}"
        never = "it is never delivered" if by_student else "it never reaches the broker"
        where = ORCHESTRATOR if by_student else msg.src  # a student drops at the stepper, not at the gate
        gate = self.circuit.by_id.get(msg.src)
        computed = msg.phase == "forward" and msg.value is not None and gate is not None and gate.inputs
        told_late = self._late(run, (), late)
        if computed and (run, msg.id) not in self._told:
            self._told[run, msg.id] = self.count
            assert msg.value is not None
            step = self._forward(run, msg.src, msg.value).partition("; sends ")[0]
            return self._numbered(where, f"{step}; {dropped}: {never}{told_late}")
        if msg.phase == "backward" and gate is not None and gate.inputs and (run, msg.src) not in self._told_backward:
            step = self._backward_step(run, msg.src)  # else the drop would be told before the step that made it
            return self._numbered(where, f"{step}; {dropped}: {never}{told_late}")
        return self._numbered(where, f"{dropped}: {never}{told_late}")

    def fault(self, event: TraceEvent, late: float | None = None) -> str:
        """The next numbered sentence, for what went wrong without a message crossing: a delay or
        a reorder by a gate's fault injector, a host lost, a run that timed out. `late`: how many
        seconds ago it happened, where this process's clock can tell (a gate in this process)."""
        self.count += 1
        msg = event.msg
        copies = " of " in event.note  # "copy 2 of 2": a duplicated message's (older traces: "copy 1" alone)
        ids = ((msg.id,) if not copies else ()) if event.type == "delay" and msg is not None else event.order or ()
        key = (event.run, msg.id) if msg is not None else ("", "")
        # which crossing was which copy the trace cannot tell (they share an id, each held its own while)
        crossed = [self._told[key], *self._copies.get(key, [])] if copies and key in self._told else []
        match event.type:
            case "delay" if msg is not None:
                if (event.run, msg.id) not in self._told:
                    self._held[event.run, msg.id] = msg
                to = f" to {join([self.label(d) for d in msg.dest])}" if msg.dest else ""
                which = "" if event.note in ("", "copy 1") else f", {event.note}"  # older traces: "copy 1" always
                sentence = (
                    f"{self._untold_step(event.run, msg)}the fault injector holds {self.label(msg.src)}'s {msg.phase} "
                    f"message ({self._id(msg.id)}{which}){to} back {event.delay_ms or 0:.1f} ms before sending it"
                )
            case "reorder":
                order = join(list(event.order or ("(none)",)))
                step = self._untold_backward(event.run, event.node)
                sentence = (
                    f"{step}the fault injector sends {self.label(event.node)}'s messages in another order: {order}"
                )
            case "host_lost":
                gone = join([self.label(g) for g in event.gates or ()] or ["no gate"])
                sentence = f"the orchestrator hears that {event.note}: {gone} went with it, and their state"
                held = [m for (run, _), m in self._held.items() if run == event.run and m.src in (event.gates or ())]
                if held:
                    what = join([f"{self.label(m.src)}'s {m.phase} message ({self._id(m.id)})" for m in held])
                    sentence += f"; so did {what}, held back by the fault injector: never to reach the broker"
            case "timeout":
                sentence = f"the orchestrator stops waiting: {event.note}"
            case _:
                sentence = f"{event.type} at {self.label(event.node)}" + (f": {event.note}" if event.note else "")
        return self._numbered(event.node, sentence + self._late(event.run, ids, late, crossed))

    def _untold_step(self, run: str, msg: TraceMsg) -> str:
        """The step that made a value, a gradient or a report held back before its crossing told
        that step (a gate's events come right after its step, before what it held back), with "; "."""
        if msg.phase == "report" and (run, msg.src) not in self._told_reports and (run, msg.id) not in self._told:
            self._told_reports[run, msg.src] = self.count
            return f"{self._report(run, msg.src, msg.grad or 0.0)}; "
        if msg.phase == "backward":
            return self._untold_backward(run, msg.src)
        g = self.circuit.by_id.get(msg.src)
        computed = msg.phase == "forward" and msg.value is not None and g is not None and g.inputs
        heard = computed and g is not None and all(s in self._values[run] for s in g.inputs)  # else: not made up
        if heard and (run, msg.id) not in self._told and (run, msg.src) not in self._told_forward:
            self._told_forward[run, msg.src] = self.count  # a gate with an injector tells a delay before its crossing
            assert msg.value is not None
            return f"{self._forward(run, msg.src, msg.value).partition('; sends ')[0]}; "
        return ""

    def _untold_backward(self, run: str, gate: str) -> str:
        """A gate's backward step if it has had gradients and no crossing has told the step, with "; "."""
        g = self.circuit.by_id.get(gate)
        if g is None or not g.inputs or (run, gate) in self._told_backward or not self._grads_in[run].get(gate):
            return ""
        return f"{self._backward_step(run, gate)}; "

    def _late(self, run: str, ids: Sequence[str], late: float | None, copies: Sequence[int] = ()) -> str:
        """Why a gate's fault is told after sentences it came before: its events reach the
        orchestrator after the messages of their step (gates/tracing.py), which may have crossed.
        `copies`: the lines where the copies of the duplicated message the fault is about crossed."""
        crossed = sorted(self._told[run, i] for i in ids if (run, i) in self._told)
        if crossed or copies:
            why = self._why_late("; a gate tells what its fault injector did after the step's messages have gone")
            if crossed:
                where = f"the message crossed at line {crossed[0]}"
            elif len(copies) == 1:
                where = f"a copy crossed at line {copies[0]}"
            else:
                where = f"its copies crossed at lines {join([str(line) for line in copies])}"
            return f" (told late: {where}{why})"
        if late is not None and late >= TOLD_LATE:
            why = self._why_late(
                "; a gate tells what its fault injector did after the step's messages have gone, or when the "
                "orchestrator asks where it stands"
            )
            return f" (told late: it happened {late:.1f} s ago{why})"
        return ""

    def _why_late(self, why: str) -> str:
        """`why`, the first time it would be said; "" after: once is enough for a reader."""
        if why in self._late_said:
            return ""
        self._late_said.add(why)
        return why

    def _id(self, msg_id: str) -> str:
        """A message id as a sentence shows it; the first one shown is what `id_note` explains."""
        self.first_id = self.first_id or msg_id
        return msg_id

    def id_note(self) -> str:
        """What a message id is, once a sentence has shown one ("" before): said under the sentences."""
        if not self.first_id:
            return ""
        sender, lamport = self.first_id.split(":")
        return f"({self.first_id}) names a message: its sender, {sender}, and the Lamport clock of its send, {lamport}"

    def _numbered(self, sender: str, sentence: str) -> str:
        if not self.placement:
            return f"{self.count:>3}. {sentence}"
        where = self.placement.get(sender, "orchestrator")
        width = max(len("orchestrator"), *map(len, self.placement.values()))
        return f"{self.count:>3}. {where:<{width}} | {sentence}"

    def _sentence(self, run: str, msg: TraceMsg) -> str:
        parsed = parse_topic(msg.topic)
        topic_gate = parsed[2] if parsed else None
        sender, known, grad = msg.src, msg.src in self.circuit.by_id, msg.grad or 0.0
        match msg.phase:
            case "feed" if topic_gate in self.circuit.by_id:
                if ops.OPS[self.circuit.by_id[topic_gate].op].fed:
                    return f"{self.label(sender)} feeds input {topic_gate} = {num(msg.value or 0.0)}"
                return f"{self.label(sender)} starts constant {self.label(topic_gate)}"
            case "forward" if (run, sender) in self._told_forward:
                sends = self._forward(run, sender, msg.value or 0.0).partition("; sends ")[2]
                return f"{self.label(sender)} sends {sends} {self._same_step(self._told_forward[run, sender])}"
            case "forward" if known:
                return self._forward(run, sender, msg.value or 0.0)
            case "backward" if sender == ORCHESTRATOR:
                out = self.circuit.output
                self._grads_in[run][out].append((ORCHESTRATOR, msg.grad or 0.0))
                return (
                    f"the orchestrator seeds {self.label(out)} with gradient {num(msg.grad or 0.0)} (d{out}/d{out} = 1)"
                )
            case "backward" if known:
                return self._backward(run, sender, msg.port or 0, grad)
            case "report" if (run, sender) in self._told_reports:
                reports = self._reports(sender, grad)
                return f"{self.label(sender)} {reports} {self._same_step(self._told_reports[run, sender])}"
            case "report":
                return self._report(run, sender, grad)
            case "error":
                code, _, reason = msg.note.partition(": ")
                return f"{self.label(sender)} reports an error ({code}): {reason}"
            case "status":
                return f"{self.label(sender)} answers the probe: {_STANDING.get(msg.note, msg.note)}"
            case "probe":
                return f"{self.label(sender)} asks every gate where it stands (a probe: the run has not finished)"
            case "release":
                return f"{self.label(sender)} tells every gate to forget the run (a release)"
        return f"{sender} sends a {msg.phase} message"

    def _report(self, run: str, sender: str, grad: float) -> str:
        return f"{self.label(sender)} got {self._got(run, sender)}; {self._reports(sender, grad)}"

    def _reports(self, sender: str, grad: float) -> str:
        """A leaf's report: a constant is a leaf too, and reports its gradient, which no result lists."""
        said = f"reports d{self.circuit.output}/d{sender} = {num(grad)} to the orchestrator"
        if sender not in self.circuit.inputs:
            said += " (a constant's: the result lists the inputs' alone)"
        return said

    def _forward(self, run: str, sender: str, value: float) -> str:
        self._values[run][sender] = value
        g = self.circuit.by_id[sender]
        to = [self.label(r) for r in self.circuit.readers[sender]]
        where = f"to {join(to)}" if to else "to no one (nothing reads it)"
        if not g.inputs:
            return f"{self.label(sender)} sends its value {num(value)} forward {where}"
        values = [self._values[run].get(s, float("nan")) for s in g.inputs]
        got = join([f"{num(v)} from {self.label(s)}" for s, v in zip(g.inputs, values, strict=True)])
        op = ops.OPS[g.op]
        if op.infix:
            formula = f" {op.symbol} ".join(num(v) for v in values)
        else:
            args = [num(v) for v in values] + ([num(g.param)] if g.param is not None else [])
            formula = f"{g.op}({', '.join(args)})"
        return f"{self.label(sender)} got {got}; computes {formula} = {num(value)}; sends {num(value)} {where}"

    def _backward(self, run: str, sender: str, port: int, grad: float) -> str:
        g = self.circuit.by_id[sender]
        target = g.inputs[port]
        self._grads_in[run][target].append((sender, grad))
        if (run, sender) in self._told_backward:
            step = self._same_step(self._told_backward[run, sender])
            return f"{self.label(sender)} sends its gradient {num(grad)} to {self.label(target)} {step}"
        return self._backward_step(run, sender)

    def _same_step(self, line: int) -> str:
        """Where the step a message came from was told: the line right above, or which."""
        return "(same step as above)" if line == self.count - 1 else f"(same step as line {line})"

    def _backward_step(self, run: str, sender: str) -> str:
        """A gate's backward step, told once: with the first of its gradients to cross, or to be dropped."""
        g = self.circuit.by_id[sender]
        self._told_backward[run, sender] = self.count
        values = [self._values[run].get(s, float("nan")) for s in g.inputs]
        out = self._values[run].get(sender, float("nan"))
        try:
            local = ops.local_grads(ops.OPS[g.op], values, out, g.param)
        except ops.DomainError:
            local = ()
        got = self._got(run, sender)
        if not local:  # its inputs' values were not heard (a lost host's, a tap reconnecting): not made up
            unknown = "its local grads are unknown here (its inputs' values were not heard)"
            return f"{self.label(sender)} got {got}; {unknown}"
        total = math.fsum(x for _, x in self._grads_in[run][sender])
        sends = join([f"{num(total * lg)} to {self.label(s)}" for s, lg in zip(g.inputs, local, strict=True)])
        return f"{self.label(sender)} got {got}; local grads [{', '.join(num(x) for x in local)}]; sends {sends}"

    def _got(self, run: str, gate: str) -> str:
        parts = self._grads_in[run].get(gate) or []
        if not parts:
            return "no gradient (nothing reads it)"
        if len(parts) == 1:
            return f"grad {num(parts[0][1])} from {self.label(parts[0][0])}"
        total = math.fsum(x for _, x in parts)
        listed = join([f"{num(x)} from {self.label(s)}" for s, x in parts])
        return f"grads {listed}, which add up at the fork to {num(total)}"
