"""A parameter as an actor: it holds its tensor and applies each step's SGD update exactly once.

Per step k the trainer feeds the parameter a trigger carrying k and the step's learning rate;
the parameter forwards its value, collects the gradient contributions of step k from its
consumer edges (keyed by (sender, port): the matmul of each replica, its L2 penalty), sums
them in key order and steps:

    value <- value - lr * sum(contributions)

then reports its new value (step k+1) to the trainer. The step id is the key of everything:
a duplicated, delayed or reordered feed or gradient of a step already taken is ignored, so
no message can apply an update twice or mix two steps. `set` frames give the parameter its
tensor and its step (initial values, a checkpoint); each is applied once per run id.
"""

from __future__ import annotations

import numpy as np

from gates.frame import Frame, FrameHeader
from gates.protocol import ErrorCode, Status, TopicKind, topic
from gates.tensor_core import REMEMBER_FINISHED, FrameGate, Outgoing, sum_in_key_order
from gates.tensor_ops import Array
from gates.tensor_protocol import TensorSpec


def sgd_update(value: Array, lr: float, grad: Array) -> Array:
    """One SGD step: micrograd's `p.data -= learning_rate * p.grad`, for a whole tensor."""
    return value - lr * grad


class ParamCore(FrameGate):
    """One parameter's state machine across steps."""

    def __init__(self, spec: TensorSpec, circuit: str) -> None:
        if spec.op != "param":
            raise ValueError(f"gate {spec.id!r}: a ParamCore runs op 'param', not {spec.op!r}")
        super().__init__(spec, circuit)
        self.value: Array | None = None
        self.step = 0
        """The step this parameter takes next: `value` is the tensor after `step` updates."""
        self._lr: float | None = None
        self._feed: FrameHeader | None = None
        self._grads: dict[tuple[str, int], Array] = {}
        self._sets: dict[str, None] = {}

    def subscriptions(self) -> list[str]:
        own = [topic(self.circuit, "feed", self.spec.id)]
        if self.spec.consumers:
            own.append(topic(self.circuit, "grad", self.spec.id))
        return [*own, topic(self.circuit, "control")]

    def on_frame(self, kind: TopicKind, frame: Frame, topic_name: str) -> list[Outgoing]:
        header = frame.header
        if header.kind == "set":
            return self._set(frame)
        if self.value is None:
            return [self.error(ErrorCode.WRONG_STEP, f"parameter {self.spec.id!r} has no value yet", None, header.run)]
        if header.step < self.step:  # a step already taken: a late or duplicated message
            return []
        if header.step > self.step:
            reason = f"parameter {self.spec.id!r} was sent step {header.step} but is at step {self.step}"
            return [self.error(ErrorCode.WRONG_STEP, reason, topic_name, header.run)]
        if kind == "feed":
            return self._fed(header, topic_name)
        return self._gradient(frame, topic_name)

    def _set(self, frame: Frame) -> list[Outgoing]:
        header = frame.header
        if header.run in self._sets:
            return []
        if frame.array is None or frame.array.shape != self.spec.shape:
            got = None if frame.array is None else frame.array.shape
            reason = f"parameter {self.spec.id!r} has shape {self.spec.shape}, was set to {got}"
            return [self.error(ErrorCode.BAD_SCHEMA, reason, None, header.run)]
        self._sets[header.run] = None
        while len(self._sets) > REMEMBER_FINISHED:
            del self._sets[next(iter(self._sets))]
        self.value = frame.array.copy()
        self.step = header.step
        self._reset()
        return [self._report(header)]

    def _fed(self, header: FrameHeader, topic_name: str) -> list[Outgoing]:
        if header.lr is None:
            return [self.error(ErrorCode.BAD_SCHEMA, "a parameter's feed carries the step's lr", topic_name)]
        if self._feed is not None:  # forwarded this step already
            return []
        assert self.value is not None
        self._feed, self._lr = header, header.lr
        sent = [(topic(self.circuit, "fwd", self.spec.id), self.frame("forward", header, self.value))]
        return sent + self._maybe_step()

    def _gradient(self, frame: Frame, topic_name: str) -> list[Outgoing]:
        header = frame.header
        if frame.array is None or frame.array.shape != self.spec.shape or header.port is None:
            got = None if frame.array is None else frame.array.shape
            reason = f"a gradient for {self.spec.id!r} has shape {self.spec.shape} and a port; got {got}"
            return [self.error(ErrorCode.BAD_SCHEMA, reason, topic_name, header.run)]
        self._grads.setdefault((header.sender, header.port), frame.array)
        return self._maybe_step()

    def _maybe_step(self) -> list[Outgoing]:
        """Step once every contribution of this step is in and the step's lr is known."""
        if self._lr is None or len(self._grads) < self.spec.consumers or self._feed is None:
            return []
        assert self.value is not None
        with np.errstate(all="ignore"):
            stepped = sgd_update(self.value, self._lr, sum_in_key_order(self._grads)) if self._grads else self.value
        if not np.isfinite(stepped).all():
            run = self._feed.run
            self._reset()
            return [self.error(ErrorCode.DOMAIN, f"the update of {self.spec.id!r} is not finite", None, run)]
        feed = self._feed
        self.value = stepped
        self.step += 1
        self._reset()
        return [self._report(feed.model_copy(update={"step": self.step}))]

    def _report(self, header: FrameHeader) -> Outgoing:
        """The parameter's tensor, as of `header.step`, to the trainer."""
        assert self.value is not None
        return topic(self.circuit, "report", self.spec.id), self.frame("value", header, self.value)

    def _reset(self) -> None:
        self._lr, self._feed, self._grads = None, None, {}

    def release(self, run: str) -> None:
        """The trainer gave up on a run: forget this step's contributions (it may be run again)."""
        if self._feed is not None and self._feed.run == run:
            self._reset()

    def status(self, run: str) -> Status:
        if self._feed is None or self._feed.run != run:
            return self.make_status(run, "unknown")
        received, expected = len(self._grads), self.spec.consumers
        return self.make_status(run, "waiting_grads", grads_received=received, grads_expected=expected)
