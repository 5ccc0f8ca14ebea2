"""A gate's logic driven directly, without a broker: duplicates, forks, bad input, freed state."""

from __future__ import annotations

import json

from gates.core import GateCore
from gates.protocol import (
    Backward,
    ErrorCode,
    ErrorReport,
    Feed,
    Forward,
    GateSpec,
    GradReport,
    Probe,
    Release,
    Status,
    topic,
)

C = "test-circuit"


def mul_gate(consumers: int = 1) -> GateCore:
    return GateCore(GateSpec(id="f", index=1, op="mul", inputs=("q", "z"), consumers=consumers), C)


def fwd(gate: GateCore, sender: str, run: str, value: float) -> list[object]:
    msg = Forward(circuit=C, sender=sender, run=run, value=value)
    return [o.message for o in gate.handle(topic(C, "fwd", sender), msg.model_dump_json().encode())]


def bwd(gate: GateCore, sender: str, run: str, grad: float, port: int = 0) -> list[object]:
    msg = Backward(circuit=C, sender=sender, run=run, port=port, grad=grad)
    return [o.message for o in gate.handle(topic(C, "grad", gate.spec.id), msg.model_dump_json().encode())]


def test_subscriptions_are_only_local_knowledge() -> None:
    gate = mul_gate()
    assert gate.subscriptions() == [
        topic(C, "fwd", "q"),
        topic(C, "fwd", "z"),
        topic(C, "grad", "f"),
        topic(C, "control"),
    ]


def test_forward_then_backward_multiplies_by_local_gradient() -> None:
    gate = mul_gate()
    assert fwd(gate, "q", "r1", 3.0) == []
    (out,) = fwd(gate, "z", "r1", -4.0)
    assert out == Forward(circuit=C, sender="f", run="r1", value=-12.0)
    sent = bwd(gate, "orchestrator", "r1", 1.0)
    assert sent == [
        Backward(circuit=C, sender="f", run="r1", port=0, grad=-4.0),
        Backward(circuit=C, sender="f", run="r1", port=1, grad=3.0),
    ]
    assert gate.open_runs == 0


def test_duplicates_never_change_a_result() -> None:
    gate = mul_gate(consumers=2)
    fwd(gate, "q", "r", 3.0)
    fwd(gate, "q", "r", 100.0)  # a duplicate with a different value must not win either
    (out,) = fwd(gate, "z", "r", 2.0)
    assert out == Forward(circuit=C, sender="f", run="r", value=6.0)
    assert fwd(gate, "z", "r", 2.0) == []  # fires once per run
    assert bwd(gate, "a", "r", 1.0) == []
    assert bwd(gate, "a", "r", 1.0) == []  # same (sender, port): not a second contribution
    sent = bwd(gate, "b", "r", 0.5)  # gradients add up at forks: 1.0 + 0.5
    assert [m.grad for m in sent if isinstance(m, Backward)] == [3.0, 4.5]
    assert bwd(gate, "b", "r", 0.5) == []  # late duplicate of a finished run: ignored
    assert fwd(gate, "q", "r", 3.0) == []
    assert gate.open_runs == 0


def test_one_input_on_two_ports() -> None:
    square = GateCore(GateSpec(id="f", index=1, op="mul", inputs=("x", "x"), consumers=1), C)
    (out,) = fwd(square, "x", "r", 3.0)
    assert out.value == 9.0  # type: ignore[attr-defined]
    sent = bwd(square, "orchestrator", "r", 1.0)
    assert [(m.port, m.grad) for m in sent] == [(0, 3.0), (1, 3.0)]  # type: ignore[attr-defined]


def test_leaf_reports_sum_of_contributions() -> None:
    leaf = GateCore(GateSpec(id="x", index=1, op="input", consumers=4), C)
    feed = Feed(circuit=C, sender="orchestrator", run="r", value=1.0)
    (out,) = leaf.handle(topic(C, "feed", "x"), feed.model_dump_json().encode())
    assert out.message == Forward(circuit=C, sender="x", run="r", value=1.0)
    for port, sender in enumerate(["a", "a", "b", "b"]):
        sent = bwd(leaf, sender, "r", 1.0, port=port % 2)
    assert sent == [GradReport(circuit=C, sender="x", run="r", grad=4.0)]


def test_unread_gate_reports_zero_gradient_at_once() -> None:
    leaf = GateCore(GateSpec(id="u", index=1, op="input", consumers=0), C)
    feed = Feed(circuit=C, sender="orchestrator", run="r", value=2.0)
    sent = [o.message for o in leaf.handle(topic(C, "feed", "u"), feed.model_dump_json().encode())]
    assert sent == [
        Forward(circuit=C, sender="u", run="r", value=2.0),
        GradReport(circuit=C, sender="u", run="r", grad=0.0),
    ]


def test_constant_uses_its_parameter() -> None:
    const = GateCore(GateSpec(id="c", index=1, op="const", param=1.0, consumers=1), C)
    feed = Feed(circuit=C, sender="orchestrator", run="r")
    (out,) = const.handle(topic(C, "feed", "c"), feed.model_dump_json().encode())
    assert out.message == Forward(circuit=C, sender="c", run="r", value=1.0)


def errors(outgoing: list[object]) -> list[ErrorCode]:
    return [m.code for m in outgoing if isinstance(m, ErrorReport)]


def test_malformed_messages_are_reported_and_the_gate_keeps_serving() -> None:
    gate = mul_gate()
    grad_topic = topic(C, "grad", "f")
    handle = gate.handle
    assert errors([o.message for o in handle(grad_topic, b"{not json")]) == [ErrorCode.BAD_JSON]
    assert errors([o.message for o in handle(grad_topic, b'{"type": "backward"}')]) == [ErrorCode.BAD_SCHEMA]
    nan = json.dumps({"type": "backward", "circuit": C, "sender": "a", "run": "r", "port": 0, "grad": "NaN"})
    assert errors([o.message for o in handle(grad_topic, nan.encode())]) == [ErrorCode.BAD_SCHEMA]
    negative_port = nan.replace('"port": 0', '"port": -1').replace('"NaN"', "1.0")
    assert errors([o.message for o in handle(grad_topic, negative_port.encode())]) == [ErrorCode.BAD_SCHEMA]
    # the wire's types only: a number in a string, a bool for a number, a flag in words were taken
    good = {"type": "backward", "circuit": C, "sender": "a", "run": "r", "port": 0, "grad": 1.0}
    for wrong in ({"grad": "3.5"}, {"grad": True}, {"port": "0"}, {"port": 0.0}, {"held": "yes"}):
        payload = json.dumps({**good, **wrong}).encode()
        assert errors([o.message for o in handle(grad_topic, payload)]) == [ErrorCode.BAD_SCHEMA], wrong
    other = Backward(circuit="other", sender="a", run="r", port=0, grad=1.0).model_dump_json().encode()
    assert errors([o.message for o in handle(grad_topic, other)]) == [ErrorCode.WRONG_CIRCUIT]
    feed = Feed(circuit=C, sender="a", run="r", value=1.0).model_dump_json().encode()
    assert errors([o.message for o in handle(grad_topic, feed)]) == [ErrorCode.WRONG_TOPIC]
    # a rejected message that names its run: the error names it too (docs/PROTOCOL.md, error)
    assert [getattr(o.message, "run", "") for o in [*handle(grad_topic, other), *handle(grad_topic, feed)]] == [
        "r",
        "r",
    ]
    assert errors(bwd(gate, "a", "never-started", 1.0)) == [ErrorCode.UNKNOWN_RUN]
    assert errors(fwd(gate, "stranger", "r", 1.0)) == [ErrorCode.UNKNOWN_SENDER]
    assert errors([o.message for o in handle("elsewhere/topic", b"{}")]) == [ErrorCode.WRONG_TOPIC]
    # every rejection left no state behind, and the gate still computes
    assert gate.open_runs == 0
    fwd(gate, "q", "ok", 2.0)
    assert fwd(gate, "z", "ok", 5.0) == [Forward(circuit=C, sender="f", run="ok", value=10.0)]


def test_domain_error_fails_the_run_and_frees_it() -> None:
    log_gate = GateCore(GateSpec(id="l", index=1, op="log", inputs=("x",), consumers=1), C)
    (report,) = fwd(log_gate, "x", "r", -1.0)
    assert isinstance(report, ErrorReport)
    assert report.code == ErrorCode.DOMAIN
    assert report.run == "r"
    assert "log(-1)" in report.message
    assert log_gate.open_runs == 0


def test_a_gradient_that_overflows_fails_the_run_by_name_and_the_gate_lives_on() -> None:
    """t = a * b at a=1e300, b=1e-300 is 1; its gradient 1e300 (from f = t * k, k=1e300) times
    a is not a float: the run fails as an undefined op does, and the gate keeps serving."""
    t = GateCore(GateSpec(id="t", index=1, op="mul", inputs=("a", "b"), consumers=1), C)
    assert fwd(t, "a", "r", 1e300) == []
    assert fwd(t, "b", "r", 1e-300) == [Forward(circuit=C, sender="t", run="r", value=1.0)]
    (report,) = bwd(t, "f", "r", 1e300)
    assert isinstance(report, ErrorReport)
    assert (report.code, report.run) == (ErrorCode.DOMAIN, "r")
    assert report.message == "the gradient t sends b, 1e+300 x 1e+300, is not a finite number"
    assert t.open_runs == 0
    leaf = GateCore(GateSpec(id="x", index=2, op="input", consumers=2), C)
    leaf.handle(
        topic(C, "feed", "x"), Feed(circuit=C, sender="orchestrator", run="r", value=1.0).model_dump_json().encode()
    )
    assert bwd(leaf, "a", "r", 1.5e308) == []
    (report,) = bwd(leaf, "b", "r", 1.5e308)  # each finite, their sum not
    assert isinstance(report, ErrorReport)
    assert (report.code, report.message) == (ErrorCode.DOMAIN, "the gradients x received add up past a float")
    fwd(t, "a", "ok", 2.0)
    assert fwd(t, "b", "ok", 3.0) == [Forward(circuit=C, sender="t", run="ok", value=6.0)]


def test_release_frees_state_and_probe_reports_it() -> None:
    gate = mul_gate()
    fwd(gate, "q", "r", 1.0)
    assert gate.open_runs == 1

    def control(message: Release | Probe) -> list[object]:
        return [o.message for o in gate.handle(topic(C, "control"), message.model_dump_json().encode())]

    (status,) = control(Probe(circuit=C, sender="orchestrator", run="r"))
    assert status == Status(circuit=C, sender="f", run="r", state="waiting_inputs", missing_inputs=("z",))
    assert control(Release(circuit=C, sender="orchestrator", run="r")) == []
    assert gate.open_runs == 0
    (status,) = control(Probe(circuit=C, sender="orchestrator", run="r"))
    assert status.state == "finished"  # type: ignore[attr-defined]


def test_finished_runs_are_remembered_boundedly() -> None:
    gate = GateCore(GateSpec(id="n", index=1, op="neg", inputs=("x",), consumers=1), C, remember_finished=3)
    for i in range(10):
        fwd(gate, "x", f"r{i}", 1.0)
        bwd(gate, "orchestrator", f"r{i}", 1.0)
    assert gate.open_runs == 0
    assert len(gate._finished) == 3


def test_open_runs_are_bounded_and_the_evicted_run_fails_by_name() -> None:
    gate = GateCore(GateSpec(id="f", index=1, op="mul", inputs=("q", "z"), consumers=1), C, max_open_runs=3)
    for n in range(3):
        assert fwd(gate, "q", f"r{n}", 1.0) == []  # each run waits for z
    out = fwd(gate, "q", "r3", 1.0)
    assert gate.open_runs == 3
    assert len(out) == 1
    assert isinstance(out[0], ErrorReport)
    assert (out[0].code, out[0].run) == (ErrorCode.EVICTED, "r0")
    assert "more than 3 runs open" in out[0].message
    assert fwd(gate, "z", "r0", 2.0) == []  # the dropped run stays dropped: no half-finished result
    done = fwd(gate, "z", "r3", 2.0)  # the newest run is intact
    assert done == [Forward(circuit=C, sender="f", run="r3", value=2.0)]
