"""What one tensor gate does with one message: per-run bookkeeping over frames, no I/O.

The array twin of gates/core.py. A data `input` leaf forwards what the trainer feeds it; an op
gate waits for a frame from each input, computes its output with gates/tensor_ops.py, and,
once the gradient contributions of all its consumer edges have arrived, sends each input that
wants one its gradient. Contributions are keyed by (sender, port), so a duplicate lands on
its own key, and summed in key order, so the order of arrival cannot change a bit of the
total. A finished run is remembered (boundedly) so that a late duplicate cannot restart it.
Parameters, which hold state across runs, are gates/param.py.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from gates import tensor_ops
from gates.frame import Frame, FrameError, FrameHeader, decode, encode
from gates.protocol import (
    MESSAGE_ADAPTER,
    ErrorCode,
    ErrorReport,
    Probe,
    Ready,
    Release,
    Status,
    TopicKind,
    parse_topic,
    topic,
)
from gates.tensor_ops import Array
from gates.tensor_protocol import TensorSpec
from gates.transport import encode as encode_json

Outgoing = tuple[str, bytes]
"""(topic, payload) to publish: a frame, or a JSON message of the scalar protocol."""
REMEMBER_FINISHED = 1024
MAX_OPEN_RUNS = 64


def sum_in_key_order(contributions: dict[tuple[str, int], Array]) -> Array:
    """The total of the contributions, added in (sender, port) order: the same bits whatever
    order they arrived in (float addition is not associative)."""
    keys = sorted(contributions)
    total = contributions[keys[0]].copy()
    for key in keys[1:]:
        total += contributions[key]
    return total


class FrameGate(abc.ABC):
    """What every tensor gate shares: topic checks, frame decoding, errors, Ready, Status."""

    def __init__(self, spec: TensorSpec, circuit: str) -> None:
        self.spec = spec
        self.circuit = circuit

    @abc.abstractmethod
    def subscriptions(self) -> list[str]:
        """Every topic this gate must hear."""

    def ready(self) -> Outgoing:
        return self._json("ready", Ready(circuit=self.circuit, sender=self.spec.id))

    def handle(self, topic_name: str, payload: bytes) -> list[Outgoing]:
        """Decode, validate and act on one message; every rejection becomes an ErrorReport."""
        parsed = parse_topic(topic_name)
        if parsed is None or parsed[0] != self.circuit or parsed[1] not in ("feed", "fwd", "grad", "control"):
            return [self.error(ErrorCode.WRONG_TOPIC, f"not a topic this gate serves: {topic_name!r}", topic_name)]
        kind, topic_gate = parsed[1], parsed[2]
        if kind == "control":
            return self._control(topic_name, payload)
        try:
            frame = decode(payload)
        except FrameError as exc:
            return [self.error(ErrorCode.BAD_SCHEMA, str(exc), topic_name)]
        header = frame.header
        if header.circuit != self.circuit:
            return [self.error(ErrorCode.WRONG_CIRCUIT, f"frame for circuit {header.circuit!r}", topic_name)]
        expected = {"feed": ("feed", "set"), "fwd": ("forward",), "grad": ("backward",)}[kind]
        if header.kind not in expected:
            return [self.error(ErrorCode.WRONG_TOPIC, f"a {header.kind!r} frame on a {kind} topic", topic_name)]
        if kind == "fwd" and header.sender != topic_gate:
            return [
                self.error(ErrorCode.UNKNOWN_SENDER, f"{header.sender!r} sent on {topic_gate!r}'s topic", topic_name)
            ]
        try:
            return self.on_frame(kind, frame, topic_name)
        except FrameError as exc:  # what the gate would send does not fit a frame: the run fails, the gate lives on
            self.release(header.run)
            return [self.error(ErrorCode.DOMAIN, f"{self.spec.id}: {exc}", None, header.run)]

    @abc.abstractmethod
    def on_frame(self, kind: TopicKind, frame: Frame, topic_name: str) -> list[Outgoing]:
        """Act on a valid frame of this circuit on one of its topics."""

    @abc.abstractmethod
    def release(self, run: str) -> None:
        """Forget a run the trainer gave up on."""

    @abc.abstractmethod
    def status(self, run: str) -> Status:
        """Where a run stands, for a Probe."""

    def _control(self, topic_name: str, payload: bytes) -> list[Outgoing]:
        try:
            message = MESSAGE_ADAPTER.validate_json(payload)
        except ValidationError as exc:
            return [self.error(ErrorCode.BAD_SCHEMA, f"control message: {exc.errors()[0]['msg']}", topic_name)]
        if message.circuit != self.circuit:
            return [self.error(ErrorCode.WRONG_CIRCUIT, f"message for circuit {message.circuit!r}", topic_name)]
        if isinstance(message, Release):
            self.release(message.run)
            return []
        if isinstance(message, Probe):
            return [self._json("status", self.status(message.run))]
        return [self.error(ErrorCode.WRONG_TOPIC, f"a {message.type!r} message on the control topic", topic_name)]

    def frame(self, kind: str, header: FrameHeader, array: Array | None, **fields: object) -> bytes:
        """A frame from this gate, for the run and step of `header`."""
        made = FrameHeader.model_validate(
            {
                "kind": kind,
                "circuit": self.circuit,
                "sender": self.spec.id,
                "run": header.run,
                "step": header.step,
                "shape": None if array is None else array.shape,
                **fields,
            }
        )
        return encode(made, array)

    def make_status(self, run: str, state: str, **fields: object) -> Status:
        return Status.model_validate(
            {"circuit": self.circuit, "sender": self.spec.id, "run": run, "state": state, **fields}
        )

    def error(self, code: ErrorCode, reason: str, topic_name: str | None, run: str | None = None) -> Outgoing:
        report = ErrorReport(
            circuit=self.circuit, sender=self.spec.id, run=run, code=code, message=reason[:500], topic=topic_name
        )
        return self._json("error", report)

    def _json(self, kind: TopicKind, message: BaseModel) -> Outgoing:
        return topic(self.circuit, kind, self.spec.id), encode_json(message)


@dataclass
class _RunState:
    header: FrameHeader | None = None
    inputs: dict[int, Array] = field(default_factory=dict)
    output: Array | None = None
    grads: dict[tuple[str, int], Array] = field(default_factory=dict)


class TensorCore(FrameGate):
    """A data input or an op gate, over every run in flight."""

    def __init__(self, spec: TensorSpec, circuit: str) -> None:
        if spec.op == "param":
            raise ValueError(f"gate {spec.id!r}: a param is a ParamCore (gates/param.py)")
        super().__init__(spec, circuit)
        self.op = None if spec.op == "input" else tensor_ops.TENSOR_OPS[spec.op]
        self._runs: dict[str, _RunState] = {}
        self._finished: dict[str, None] = {}

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    def subscriptions(self) -> list[str]:
        own = [topic(self.circuit, "fwd", source) for source in dict.fromkeys(self.spec.inputs)]
        if self.op is None:
            own.append(topic(self.circuit, "feed", self.spec.id))
        if self.spec.consumers:
            own.append(topic(self.circuit, "grad", self.spec.id))
        return [*own, topic(self.circuit, "control")]

    def on_frame(self, kind: TopicKind, frame: Frame, topic_name: str) -> list[Outgoing]:
        header = frame.header
        if header.run in self._finished:
            return []
        if kind == "feed":
            if self.op is not None or header.kind != "feed":
                return [self.error(ErrorCode.WRONG_TOPIC, f"{self.spec.id!r} is not fed", topic_name, header.run)]
            return self._fed(frame)
        if kind == "fwd":
            return self._forward(frame, topic_name)
        return self._backward(frame, topic_name)

    # -- forward --------------------------------------------------------------------------

    def _fed(self, frame: Frame) -> list[Outgoing]:
        """A feed: its array, of the input's shape, or the step fails (missing_value: it has no value)."""
        if frame.array is None or frame.array.shape != self.spec.shape:
            got = None if frame.array is None else frame.array.shape
            reason = f"input {self.spec.id!r} takes shape {self.spec.shape}, was fed {got}"
            return self._fail(frame.header.run, ErrorCode.MISSING_VALUE, reason)
        state = self._open(frame.header)
        if state.output is not None:
            return []
        return self._fire_forward(frame.header, state, frame.array)

    def _forward(self, frame: Frame, topic_name: str) -> list[Outgoing]:
        header = frame.header
        ports = [p for p, source in enumerate(self.spec.inputs) if source == header.sender]
        if not ports:
            return [self.error(ErrorCode.UNKNOWN_SENDER, f"{header.sender!r} is not an input", topic_name, header.run)]
        expected = self.spec.input_shapes[ports[0]]
        if frame.array is None or frame.array.shape != expected:
            got = None if frame.array is None else frame.array.shape
            reason = f"input {header.sender!r} must have shape {expected}, its frame has {got}"
            return [self.error(ErrorCode.BAD_SCHEMA, reason, topic_name, header.run)]
        state = self._open(header)
        for port in ports:
            state.inputs.setdefault(port, frame.array)
        if state.output is not None or len(state.inputs) < len(self.spec.inputs):
            return []
        assert self.op is not None
        try:
            out = tensor_ops.forward(self.op, self._inputs(state), self.spec.param)
        except tensor_ops.DomainError as exc:
            return self._fail(header.run, ErrorCode.DOMAIN, f"{self.spec.id}: {exc}")
        return self._fire_forward(header, state, out)

    def _fire_forward(self, header: FrameHeader, state: _RunState, out: Array) -> list[Outgoing]:
        state.output = out
        sent = [(topic(self.circuit, "fwd", self.spec.id), self.frame("forward", header, out))]
        if self.spec.consumers == 0:  # nobody needs this gate's gradient: the run is done here
            self._finish(header.run)
        return sent

    # -- backward -------------------------------------------------------------------------

    def _backward(self, frame: Frame, topic_name: str) -> list[Outgoing]:
        header = frame.header
        state = self._runs.get(header.run)
        if state is None or state.output is None or state.header is None:
            reason = f"gradient for run {header.run!r} before this gate's output"
            return [self.error(ErrorCode.UNKNOWN_RUN, reason, topic_name, header.run)]
        if frame.array is None or frame.array.shape != self.spec.shape or header.port is None:
            got = None if frame.array is None else frame.array.shape
            reason = f"a gradient for {self.spec.id!r} has shape {self.spec.shape} and a port; got {got}"
            return [self.error(ErrorCode.BAD_SCHEMA, reason, topic_name, header.run)]
        state.grads.setdefault((header.sender, header.port), frame.array)
        if len(state.grads) < self.spec.consumers:
            return []
        dout = sum_in_key_order(state.grads)
        run_header = state.header
        if self.op is None:  # a data input: nothing upstream wants a gradient
            self._finish(header.run)
            return []
        try:
            grads = tensor_ops.input_grads(self.op, self._inputs(state), state.output, dout, self.spec.param)
        except tensor_ops.DomainError as exc:
            return self._fail(header.run, ErrorCode.DOMAIN, f"{self.spec.id}: {exc}")
        self._finish(header.run)
        return [
            (topic(self.circuit, "grad", source), self.frame("backward", run_header, grad, port=port))
            for port, (source, grad) in enumerate(zip(self.spec.inputs, grads, strict=True))
            if self.spec.needs_grad[port]
        ]

    # -- bookkeeping ----------------------------------------------------------------------

    def _inputs(self, state: _RunState) -> tuple[Array, ...]:
        return tuple(state.inputs[port] for port in range(len(self.spec.inputs)))

    def _open(self, header: FrameHeader) -> _RunState:
        """The run's state; past MAX_OPEN_RUNS the oldest open run is forgotten (training runs
        one step at a time, so only abandoned runs pile up)."""
        state = self._runs.get(header.run)
        if state is None:
            while len(self._runs) >= MAX_OPEN_RUNS:
                del self._runs[next(iter(self._runs))]
            state = self._runs[header.run] = _RunState(header=header)
        return state

    def _finish(self, run: str) -> None:
        self._runs.pop(run, None)
        self._finished[run] = None
        while len(self._finished) > REMEMBER_FINISHED:
            del self._finished[next(iter(self._finished))]

    def release(self, run: str) -> None:
        self._finish(run)

    def _fail(self, run: str, code: ErrorCode, reason: str) -> list[Outgoing]:
        self._finish(run)
        return [self.error(code, reason, None, run)]

    def status(self, run: str) -> Status:
        state = self._runs.get(run)
        if run in self._finished:
            return self.make_status(run, "finished")
        if state is None:
            return self.make_status(run, "unknown")
        if state.output is None:
            missing = tuple(dict.fromkeys(s for p, s in enumerate(self.spec.inputs) if p not in state.inputs))
            return self.make_status(run, "waiting_inputs", missing_inputs=missing)
        received, expected = len(state.grads), self.spec.consumers
        return self.make_status(run, "waiting_grads", grads_received=received, grads_expected=expected)
