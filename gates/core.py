"""What one gate does with one message: per-run bookkeeping, no I/O.

The actor owns the MQTT connection; this class owns the decisions. Given a topic and a raw
payload it returns the messages to publish. Keeping the two apart lets the unit tests drive
a gate's logic directly, and keeps the actor a thin loop.

Per run the gate keeps the input values that have arrived and the gradient contributions
keyed by (sender, port). A duplicate lands on the same key, so it can never change a sum,
and a finished run is remembered (boundedly) so that a late duplicate cannot restart it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from gates import ops
from gates.protocol import (
    MESSAGE_ADAPTER,
    Backward,
    ErrorCode,
    ErrorReport,
    Feed,
    Forward,
    GateSpec,
    GradReport,
    Message,
    Probe,
    Ready,
    Release,
    Status,
    TopicKind,
    parse_topic,
    topic,
    what_is_wrong,
)

EXPECTED: dict[TopicKind, tuple[type[BaseModel], ...]] = {
    "feed": (Feed,),
    "fwd": (Forward,),
    "grad": (Backward,),
    "control": (Release, Probe),
}


@dataclass(frozen=True, slots=True)
class Wiring:
    """A GateSpec's fields in about a sixth of the memory (a validated pydantic model carries a
    dict and a fields-set); what a gate keeps of its spec while it waits, at 65,000 gates."""

    id: str
    index: int
    op: str
    inputs: tuple[str, ...]
    param: float | None
    consumers: int
    nodes: int | None

    @classmethod
    def of(cls, spec: GateSpec) -> Wiring:
        return cls(spec.id, spec.index, spec.op, spec.inputs, spec.param, spec.consumers, spec.nodes)


def _checked_op(spec: GateSpec) -> ops.Op:
    """The spec's op, once the spec is known to fit it (a host may be sent anything)."""
    op = ops.OPS.get(spec.op)
    if op is None:
        raise ValueError(f"gate {spec.id!r}: unknown op {spec.op!r}")
    if len(spec.inputs) != op.arity:
        raise ValueError(f"gate {spec.id!r}: op {spec.op!r} takes {op.arity} input(s), got {len(spec.inputs)}")
    if op.takes_param != (spec.param is not None):
        raise ValueError(f"gate {spec.id!r}: op {spec.op!r} {'needs' if op.takes_param else 'takes no'} param")
    return op


@dataclass(frozen=True)
class Outgoing:
    """A message the gate wants published, and where."""

    topic: str
    message: BaseModel


@dataclass
class _RunState:
    inputs: dict[int, float] = field(default_factory=dict)
    output: float | None = None
    grads: dict[tuple[str, int], float] = field(default_factory=dict)


class GateCore:
    """One gate's state machine over all runs in flight."""

    __slots__ = (  # no per-instance dict: memory, at 65,000 gates
        "_evicted",
        "_finished",
        "_max_open_runs",
        "_remember_finished",
        "_runs",
        "circuit",
        "is_leaf",
        "op",
        "spec",
    )

    def __init__(
        self, spec: GateSpec, circuit: str, *, remember_finished: int = 4096, max_open_runs: int = 65536
    ) -> None:
        self.op = _checked_op(spec)
        self.spec = Wiring.of(spec)
        self.circuit = circuit
        self.is_leaf = self.op.leaf
        self._runs: dict[str, _RunState] = {}
        self._finished: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._remember_finished = remember_finished
        self._max_open_runs = max_open_runs
        self._evicted: list[Outgoing] | None = None  # a list only while a dropped run's report waits

    # -- what to listen to and announce -------------------------------------------------

    def subscriptions(self) -> list[str]:
        """Every topic this gate must hear: its inputs' outputs, its gradients, control."""
        own = [topic(self.circuit, "grad", self.spec.id), topic(self.circuit, "control")]
        if self.is_leaf:
            own.append(topic(self.circuit, "feed", self.spec.id))
        return [topic(self.circuit, "fwd", source) for source in dict.fromkeys(self.spec.inputs)] + own

    def ready(self) -> Outgoing:
        return self._out("ready", Ready(circuit=self.circuit, sender=self.spec.id))

    @property
    def open_runs(self) -> int:
        """Runs with state held in memory (for tests that check state is freed)."""
        return len(self._runs)

    # -- the entry point: receive (the actor's); handle, its outgoing messages alone ----------

    def handle(self, topic_name: str, payload: bytes) -> list[Outgoing]:
        """Decode, validate and act on one message; every rejection becomes an ErrorReport."""
        return self.receive(topic_name, payload)[1]

    def receive(self, topic_name: str, payload: bytes) -> tuple[Message | None, list[Outgoing]]:
        """`handle`, and the message it decoded: the actor reads its `clock` and `held` flag from
        it instead of searching the bytes. None if the payload or its topic was rejected, if it
        names another circuit, or if its clock is longer than the deployment numbers nodes (a
        gate keeps a traced run's clock: the bound must hold before anything reads it). A message
        of this circuit on a topic of another kind comes back with its error: the error is a
        step of its run, which its trace and step mode show."""
        parsed = parse_topic(topic_name)
        if parsed is None or parsed[0] != self.circuit or parsed[1] not in EXPECTED:
            error = self._error(ErrorCode.WRONG_TOPIC, f"not a topic this gate serves: {topic_name!r}", topic_name)
            return None, [error]
        _, kind, topic_gate = parsed
        try:
            message = MESSAGE_ADAPTER.validate_json(payload)
        except ValidationError as exc:
            return None, [self._rejected(exc, topic_name)]
        run = getattr(message, "run", None)  # every kind but `ready` names one: said with the error
        if message.clock is not None and self.spec.nodes is not None and len(message.clock.vc) > self.spec.nodes:
            reason = f"clock.vc: {len(message.clock.vc)} entries, for a deployment of {self.spec.nodes} nodes"
            return None, [self._error(ErrorCode.BAD_SCHEMA, reason, topic_name, run)]
        if message.circuit != self.circuit:
            error = self._error(ErrorCode.WRONG_CIRCUIT, f"message for circuit {message.circuit!r}", topic_name, run)
            return None, [error]
        if not isinstance(message, EXPECTED[kind]):
            reason = f"a {message.type!r} message on a {kind} topic"
            return message, [self._error(ErrorCode.WRONG_TOPIC, reason, topic_name, run)]
        match message:
            case Feed():
                return message, self._with_evicted(self._on_feed(message))
            case Forward():
                return message, self._with_evicted(self._on_forward(message, topic_gate, topic_name))
            case Backward():
                return message, self._on_backward(message, topic_name)
            case Release():
                self._finish(message.run)
                return message, []
            case Probe():
                return message, [self._status(message.run)]
        raise AssertionError(f"unhandled {message!r}")  # pragma: no cover

    # -- forward --------------------------------------------------------------------------

    def _on_feed(self, msg: Feed) -> list[Outgoing]:
        if msg.run in self._finished:
            return []
        if self.op.fed:
            if msg.value is None:
                return self._fail(msg.run, ErrorCode.MISSING_VALUE, f"input {self.spec.id!r} was fed no value")
            value = msg.value
        else:
            assert self.spec.param is not None
            value = self.spec.param
        state = self._open(msg.run)
        if state.output is not None:
            return []
        return self._fire_forward(msg.run, state, value)

    def _on_forward(self, msg: Forward, topic_gate: str | None, topic_name: str) -> list[Outgoing]:
        if msg.sender != topic_gate or msg.sender not in self.spec.inputs:
            return [
                self._error(
                    ErrorCode.UNKNOWN_SENDER, f"{msg.sender!r} is not an input of this gate", topic_name, msg.run
                )
            ]
        if msg.run in self._finished:
            return []
        state = self._open(msg.run)
        for port in (p for p, source in enumerate(self.spec.inputs) if source == msg.sender):
            state.inputs.setdefault(port, msg.value)
        if state.output is not None or len(state.inputs) < self.op.arity:
            return []
        values = [state.inputs[port] for port in range(self.op.arity)]
        try:
            out = ops.forward(self.op, values, self.spec.param)
        except ops.DomainError as exc:
            return self._fail(msg.run, ErrorCode.DOMAIN, str(exc))
        return self._fire_forward(msg.run, state, out)

    def _fire_forward(self, run: str, state: _RunState, out: float) -> list[Outgoing]:
        state.output = out
        sent = [self._out("fwd", Forward(circuit=self.circuit, sender=self.spec.id, run=run, value=out))]
        if self.spec.consumers == 0:  # nothing reads this gate: its gradient is 0 already
            sent += self._fire_backward(run, state)
        return sent

    # -- backward -------------------------------------------------------------------------

    def _on_backward(self, msg: Backward, topic_name: str) -> list[Outgoing]:
        if msg.run in self._finished:
            return []
        state = self._runs.get(msg.run)
        if state is None or state.output is None:
            return [
                self._error(
                    ErrorCode.UNKNOWN_RUN,
                    f"gradient for run {msg.run!r} before this gate's output",
                    topic_name,
                    msg.run,
                )
            ]
        state.grads.setdefault((msg.sender, msg.port), msg.grad)
        if len(state.grads) < self.spec.consumers:
            return []
        return self._fire_backward(msg.run, state)

    def _fire_backward(self, run: str, state: _RunState) -> list[Outgoing]:
        try:  # fsum is exactly rounded, so the total cannot depend on the order of arrival
            total = math.fsum(state.grads.values())
        except OverflowError:  # finite gradients whose sum is not
            total = math.inf
        if not math.isfinite(total):
            return self._fail(run, ErrorCode.DOMAIN, f"the gradients {self.spec.id} received add up past a float")
        if self.is_leaf:
            self._finish(run)
            return [self._out("report", GradReport(circuit=self.circuit, sender=self.spec.id, run=run, grad=total))]
        assert state.output is not None
        values = [state.inputs[port] for port in range(self.op.arity)]
        try:
            local = ops.local_grads(self.op, values, state.output, self.spec.param)
        except ops.DomainError as exc:
            return self._fail(run, ErrorCode.DOMAIN, str(exc))
        sent = [total * g for g in local]  # the chain rule: finite factors, a product that may not be
        for source, g, grad in zip(self.spec.inputs, local, sent, strict=True):
            if not math.isfinite(grad):
                reason = f"the gradient {self.spec.id} sends {source}, {total:g} x {g:g}, is not a finite number"
                return self._fail(run, ErrorCode.DOMAIN, reason)
        self._finish(run)
        return [
            Outgoing(
                topic(self.circuit, "grad", source),
                Backward(circuit=self.circuit, sender=self.spec.id, run=run, port=port, grad=grad),
            )
            for port, (source, grad) in enumerate(zip(self.spec.inputs, sent, strict=True))
        ]

    # -- bookkeeping ----------------------------------------------------------------------

    def _open(self, run: str) -> _RunState:
        """The run's state, made if new; past max_open_runs the oldest open run is dropped.

        The bound keeps a gate's memory finite whatever it is sent (runs that are never
        finished or released, by accident or on purpose); the dropped run fails by name.
        """
        state = self._runs.get(run)
        if state is None:
            if len(self._runs) >= self._max_open_runs:
                oldest = next(iter(self._runs))
                reason = f"dropped run {oldest}: more than {self._max_open_runs} runs open at this gate"
                self._evicted = [*(self._evicted or []), *self._fail(oldest, ErrorCode.EVICTED, reason)]
            state = self._runs[run] = _RunState()
        return state

    def _with_evicted(self, outgoing: list[Outgoing]) -> list[Outgoing]:
        """`outgoing`, plus the reports of any run dropped while handling it (rare: no copy otherwise)."""
        if self._evicted is None:
            return outgoing
        evicted, self._evicted = self._evicted, None
        return outgoing + evicted

    def _finish(self, run: str) -> None:
        self._runs.pop(run, None)
        self._finished[run] = None
        while len(self._finished) > self._remember_finished:
            del self._finished[next(iter(self._finished))]

    def _status(self, run: str) -> Outgoing:
        state = self._runs.get(run)
        expected = self.spec.consumers
        if run in self._finished:
            status = Status(circuit=self.circuit, sender=self.spec.id, run=run, state="finished")
        elif state is None:
            status = Status(circuit=self.circuit, sender=self.spec.id, run=run, state="unknown")
        elif state.output is None:
            missing = tuple(dict.fromkeys(s for p, s in enumerate(self.spec.inputs) if p not in state.inputs))
            status = Status(
                circuit=self.circuit, sender=self.spec.id, run=run, state="waiting_inputs", missing_inputs=missing
            )
        else:
            status = Status(
                circuit=self.circuit,
                sender=self.spec.id,
                run=run,
                state="waiting_grads",
                grads_received=len(state.grads),
                grads_expected=expected,
            )
        return self._out("status", status)

    def _fail(self, run: str, code: ErrorCode, reason: str) -> list[Outgoing]:
        self._finish(run)
        return [self._error(code, reason, None, run)]

    def _rejected(self, exc: ValidationError, topic_name: str) -> Outgoing:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            return self._error(ErrorCode.BAD_JSON, f"payload is not JSON: {errors[0]['msg']}", topic_name)
        return self._error(ErrorCode.BAD_SCHEMA, what_is_wrong(exc)[:500], topic_name)

    def _error(self, code: ErrorCode, reason: str, topic_name: str | None, run: str | None = None) -> Outgoing:
        report = ErrorReport(
            circuit=self.circuit, sender=self.spec.id, run=run, code=code, message=reason, topic=topic_name
        )
        return self._out("error", report)

    def _out(self, kind: TopicKind, message: BaseModel) -> Outgoing:
        return Outgoing(topic(self.circuit, kind, self.spec.id), message)
