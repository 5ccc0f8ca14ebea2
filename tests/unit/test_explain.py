"""The --explain sentences, driven by real GateCores over an in-memory queue (gate logic only)."""

from __future__ import annotations

from collections import deque

from pydantic import BaseModel

from gates.core import GateCore
from gates.protocol import ORCHESTRATOR, Backward, Feed, Forward, GradReport, Message, topic
from gates.trace_records import TraceEvent, TraceMsg, msg_fields
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.explain import Explainer


def one_pass(circuit: Circuit, inputs: dict[str, float]) -> list[tuple[str, Message]]:
    """Every message of one run in FIFO delivery order, as a broker with one queue would carry them."""
    cores = [GateCore(spec, "c") for spec in circuit.specs()]
    subscribers: dict[str, list[GateCore]] = {}
    for core in cores:
        for name in core.subscriptions():
            subscribers.setdefault(name, []).append(core)
    queue: deque[tuple[str, BaseModel]] = deque()
    for leaf in circuit.leaves:
        feed = Feed(circuit="c", sender=ORCHESTRATOR, run="r", value=inputs.get(leaf))
        queue.append((topic("c", "feed", leaf), feed))
    carried: list[tuple[str, Message]] = []
    while queue:
        name, message = queue.popleft()
        carried.append((name, message))  # type: ignore[arg-type]
        if isinstance(message, Forward) and message.sender == circuit.output:
            seed = Backward(circuit="c", sender=ORCHESTRATOR, run="r", port=0, grad=1.0)
            queue.append((topic("c", "grad", circuit.output), seed))
        for core in subscribers.get(name, []):
            queue.extend((out.topic, out.message) for out in core.handle(name, message.model_dump_json().encode()))
    return carried


def told(circuit: Circuit, inputs: dict[str, float], placement: dict[str, str] | None = None) -> list[str]:
    explainer = Explainer(circuit, placement)
    return [explainer.explain(name, message) for name, message in one_pass(circuit, inputs)]


def test_the_notes_circuit_told_message_by_message() -> None:
    circuit = compile_source("q = x + y; f = q * z")
    lines = told(circuit, {"x": -2, "y": 5, "z": -4})
    assert len(lines) == circuit.messages_per_pass()
    assert lines == [
        "  1. the orchestrator feeds input x = -2",
        "  2. the orchestrator feeds input y = 5",
        "  3. the orchestrator feeds input z = -4",
        "  4. x sends its value -2 forward to add(q)",
        "  5. y sends its value 5 forward to add(q)",
        "  6. z sends its value -4 forward to mul(f)",
        "  7. add(q) got -2 from x and 5 from y; computes -2 + 5 = 3; sends 3 to mul(f)",
        "  8. mul(f) got 3 from add(q) and -4 from z; computes 3 * -4 = -12; sends -12 to the orchestrator",
        "  9. the orchestrator seeds mul(f) with gradient 1 (df/df = 1)",
        " 10. mul(f) got grad 1 from the orchestrator; local grads [-4, 3]; sends -4 to add(q) and 3 to z",
        " 11. mul(f) sends its gradient 3 to z (same step as above)",
        " 12. add(q) got grad -4 from mul(f); local grads [1, 1]; sends -4 to x and -4 to y",
        " 13. add(q) sends its gradient -4 to y (same step as above)",
        " 14. z got grad 3 from mul(f); reports df/dz = 3 to the orchestrator",
        " 15. x got grad -4 from add(q); reports df/dx = -4 to the orchestrator",
        " 16. y got grad -4 from add(q); reports df/dy = -4 to the orchestrator",
    ]


def test_gradients_adding_up_at_a_fork_are_told() -> None:
    lines = told(compile_source("f = x * x"), {"x": 3})
    assert lines[-1].endswith(
        "x got grads 3 from mul(f) and 3 from mul(f), which add up at the fork to 6; "
        "reports df/dx = 6 to the orchestrator"
    )


def test_each_line_names_the_host_of_its_sender() -> None:
    circuit = compile_source("q = x + y; f = q * z")
    placement = {"x": "h1", "y": "h1", "z": "h2", "q": "h2", "f": "h3"}
    lines = told(circuit, {"x": -2, "y": 5, "z": -4}, placement)
    assert lines[0] == "  1. orchestrator | the orchestrator feeds input x = -2"
    assert lines[6] == "  7. h2           | add(q) got -2 from x and 5 from y; computes -2 + 5 = 3; sends 3 to mul(f)"
    assert lines[11].startswith(" 12. h2           | add(q) got grad -4 from mul(f)")


def test_ops_with_a_parameter_show_it() -> None:
    lines = told(compile_source("f = x ** 2"), {"x": 3})
    assert "pow(f) got 3 from x; computes pow(3, 2) = 9; sends 9 to the orchestrator" in lines[2]


def told_as_traced(circuit: Circuit, carried: list[tuple[str, Message]]) -> list[str]:
    """The sentences --explain makes from a trace's crossings: each message with an id (its
    position in `carried`, as a stamp would give it), a copy with the same id."""
    explainer = Explainer(circuit)
    ids: dict[int, str] = {}
    for i, (_, message) in enumerate(carried):
        ids.setdefault(id(message), f"{message.sender}:{i}")
    lines = []
    for name, message in carried:
        fields = msg_fields(name, message, stamped=False)
        assert fields is not None
        lines.append(explainer.tell("r", TraceMsg.model_validate({**fields, "id": ids[id(message)]})))
    return lines


def test_a_duplicated_gradient_is_told_as_a_copy_and_counted_once() -> None:
    circuit = compile_source("q = x + y; f = q * z")
    carried = one_pass(circuit, {"x": -2, "y": 5, "z": -4})
    into_q = next(i for i, (name, m) in enumerate(carried) if name == topic("c", "grad", "q"))
    carried.insert(into_q + 1, carried[into_q])  # the broker carries mul(f)'s -4 to add(q) twice
    lines = told_as_traced(circuit, carried)
    assert lines[into_q + 1] == (
        f"{into_q + 2:>3}. a second copy of mul(f)'s backward message (f:{into_q}) crosses the broker "
        "(the fault injector duplicated it); it changes nothing: a gate takes one message per sender and port in a run"
    )
    assert any(
        line.endswith("add(q) got grad -4 from mul(f); local grads [1, 1]; sends -4 to x and -4 to y") for line in lines
    )
    assert lines[-1].endswith("y got grad -4 from add(q); reports df/dy = -4 to the orchestrator")


def test_a_dropped_message_and_the_probe_and_release_are_told() -> None:
    circuit = compile_source("q = x + y; f = q * z")
    explainer = Explainer(circuit)
    dropped = TraceMsg(
        id="x:7", src="x", dest=(ORCHESTRATOR,), phase="report", topic=topic("c", "report", "x"), grad=-4.0
    )
    assert explainer.id_note() == ""  # no id shown yet: nothing to say of one
    assert explainer.dropped(dropped) == (
        "  1. the fault injector drops x's report message (x:7) to the orchestrator: it never reaches the broker"
    )
    assert explainer.id_note() == "(x:7) names a message: its sender, x, and the Lamport clock of its send, 7"
    probe = TraceMsg(id="orchestrator:9", src=ORCHESTRATOR, phase="probe", topic=topic("c", "control"))
    assert explainer.tell("r", probe).endswith(
        "the orchestrator asks every gate where it stands (a probe: the run has not finished)"
    )
    release = probe.model_copy(update={"id": "orchestrator:10", "phase": "release"})
    assert explainer.tell("r", release) == "  3. the orchestrator tells every gate to forget the run (a release)"


def told_up_to_the_first_gradient_of(gate: str) -> tuple[Explainer, list[tuple[str, Message]], int]:
    """q = x + y; f = q * z at -2, 5, -4: an explainer that has told every message before
    `gate`'s first gradient, the pass's messages, and that gradient's place among them."""
    circuit = compile_source("q = x + y; f = q * z")
    carried = one_pass(circuit, {"x": -2, "y": 5, "z": -4})
    explainer = Explainer(circuit)
    first = next(i for i, (_, m) in enumerate(carried) if isinstance(m, Backward) and m.sender == gate)
    for name, message in carried[:first]:
        explainer.explain(name, message)
    return explainer, carried, first


def test_delays_reorders_a_lost_host_and_a_timeout_are_told() -> None:
    circuit = compile_source("q = x + y; f = q * z")
    explainer = Explainer(circuit)
    sent = TraceMsg(id="q:5", src="q", dest=("f",), phase="forward", topic=topic("c", "fwd", "q"), value=3.0)
    at_q = {"t_ns": 1, "run": "r", "node": "q", "host": "local", "lamport": 6, "vc": {"q": 6}}
    delay = TraceEvent.model_validate({**at_q, "type": "delay", "msg": sent, "delay_ms": 12.25})
    assert explainer.fault(delay) == (
        "  1. the fault injector holds add(q)'s forward message (q:5) to mul(f) back 12.2 ms before sending it"
    )
    reorder = TraceEvent.model_validate({**at_q, "type": "reorder", "order": ["q:8", "q:7"]})
    assert explainer.fault(reorder) == "  2. the fault injector sends add(q)'s messages in another order: q:8 and q:7"
    at_orchestrator = {**at_q, "node": ORCHESTRATOR, "vc": {ORCHESTRATOR: 3}}
    lost = TraceEvent.model_validate(
        {**at_orchestrator, "type": "host_lost", "gates": ["q", "z"], "note": "host h2 went offline (connection lost)"}
    )
    assert explainer.fault(lost) == (  # q:5 was held back and never crossed: it went too
        "  3. the orchestrator hears that host h2 went offline (connection lost): add(q) and z went with it, "
        "and their state; so did add(q)'s forward message (q:5), held back by the fault injector: never to reach "
        "the broker"
    )
    late = TraceEvent.model_validate({**at_orchestrator, "type": "timeout", "note": "no result after 1 s; probing"})
    assert explainer.fault(late) == "  4. the orchestrator stops waiting: no result after 1 s; probing"
    status = TraceMsg(id="z:9", src="z", dest=(ORCHESTRATOR,), phase="status", topic=topic("c", "status", "z"))
    assert explainer.tell("r", status.model_copy(update={"note": "unknown"})) == (
        "  5. z answers the probe: unknown: it holds nothing of this run (it never heard of it, or has forgotten it)"
    )
    report = TraceMsg(id="z:12", src="z", dest=(ORCHESTRATOR,), phase="report", topic=topic("c", "report", "z"))
    explainer.tell("r", report)
    copy = explainer.tell("r", report)
    assert copy.endswith("it changes nothing: the orchestrator takes the first copy of each message")
    second = delay.model_copy(update={"note": "copy 2 of 2"})  # a duplicated message's second copy, delayed
    assert explainer.fault(second).endswith(
        "holds add(q)'s forward message (q:5, copy 2 of 2) to mul(f) back 12.2 ms before sending it"
    )
    older = delay.model_copy(update={"note": "copy 1"})  # a trace's gates once said so of every delayed message
    assert explainer.fault(older).endswith("(q:5) to mul(f) back 12.2 ms before sending it")


def test_a_value_held_back_is_told_with_the_step_that_made_it() -> None:
    """A gate with a fault injector tells its events at every step: a delay of its value comes
    before the value crosses, and was told before the computation that made the value."""
    circuit = compile_source("q = x + y; f = q * z")
    carried = one_pass(circuit, {"x": -2, "y": 5, "z": -4})
    explainer = Explainer(circuit)
    name, q = next((n, m) for n, m in carried if isinstance(m, Forward) and m.sender == "q")
    for before, message in carried[: carried.index((name, q))]:
        explainer.explain(before, message)
    held = TraceMsg(id="q:5", src="q", dest=("f",), phase="forward", topic=name, value=3.0)
    at_q = {"t_ns": 1, "run": "r", "node": "q", "host": "local", "lamport": 6, "vc": {"q": 6}}
    delay = TraceEvent.model_validate({**at_q, "type": "delay", "msg": held, "delay_ms": 300.0})
    line = explainer.count + 1
    assert explainer.fault(delay) == (
        f"{line:>3}. add(q) got -2 from x and 5 from y; computes -2 + 5 = 3; the fault injector holds add(q)'s "
        "forward message (q:5) to mul(f) back 300.0 ms before sending it"
    )
    crossed = explainer.explain(name, q)
    assert crossed == f"{line + 1:>3}. add(q) sends 3 to mul(f) (same step as above)"


def test_a_lost_host_names_only_the_held_messages_that_never_crossed() -> None:
    """Held back, then sent before the host died: it crossed, and is not said lost with it."""
    explainer = Explainer(compile_source("q = x + y; f = q * z"))
    at_z = {"t_ns": 1, "run": "r", "node": "z", "host": "local", "lamport": 6, "vc": {"z": 6}}
    sent = TraceMsg(id="z:6", src="z", dest=("f",), phase="forward", topic=topic("c", "fwd", "z"), value=-4.0)
    explainer.fault(TraceEvent.model_validate({**at_z, "type": "delay", "msg": sent, "delay_ms": 5.4}))
    explainer.tell("r", sent)
    at_orchestrator = {**at_z, "node": ORCHESTRATOR, "vc": {ORCHESTRATOR: 3}}
    lost = TraceEvent.model_validate({**at_orchestrator, "type": "host_lost", "gates": ["z"], "note": "host h2 died"})
    assert explainer.fault(lost) == "  3. the orchestrator hears that host h2 died: z went with it, and their state"
    other_run = TraceEvent.model_validate({**at_z, "run": "r2", "type": "delay", "msg": sent, "delay_ms": 5.4})
    explainer.fault(other_run)  # another run's held message: not this run's loss
    assert explainer.fault(lost).endswith("z went with it, and their state")


def test_a_fault_told_after_the_message_it_delayed_names_that_line() -> None:
    """A gate's events come after its step's messages: a delay told after its message's
    crossing would read as if the value arrived before it was sent."""
    explainer = Explainer(compile_source("q = x + y; f = q * z"))
    sent = TraceMsg(id="z:6", src="z", dest=("f",), phase="forward", topic=topic("c", "fwd", "z"), value=-4.0)
    assert explainer.tell("r", sent).startswith("  1. z sends its value -4 forward to mul(f)")
    at_z = {"t_ns": 1, "run": "r", "node": "z", "host": "local", "lamport": 6, "vc": {"z": 6}}
    delay = TraceEvent.model_validate({**at_z, "type": "delay", "msg": sent, "delay_ms": 5.4})
    assert explainer.fault(delay, late=0.01) == (
        "  2. the fault injector holds z's forward message (z:6) to mul(f) back 5.4 ms before sending it "
        "(told late: the message crossed at line 1; a gate tells what its fault injector did after the step's "
        "messages have gone)"
    )
    reorder = TraceEvent.model_validate({**at_z, "type": "reorder", "order": ["z:9", "z:6"]})
    assert explainer.fault(reorder).endswith(  # why it is late was said once: a second time is noise
        "in another order: z:9 and z:6 (told late: the message crossed at line 1)"
    )
    other = TraceEvent.model_validate({**at_z, "type": "delay", "msg": sent.model_copy(update={"id": "z:7"})})
    assert explainer.fault(other, late=0.01).endswith("before sending it")  # its message has not crossed yet
    aged = TraceEvent.model_validate({**at_z, "type": "delay", "msg": sent.model_copy(update={"id": "z:8"})})
    assert explainer.fault(aged, late=2.0).endswith(  # another reason: said once too
        "(told late: it happened 2.0 s ago; a gate tells what its fault injector did after the step's messages"
        " have gone, or when the orchestrator asks where it stands)"
    )
    explainer.tell("r", sent)  # line 6: z:6's second copy crosses
    second = delay.model_copy(update={"note": "copy 2 of 2"})  # which copy crossed first, no trace tells
    assert explainer.fault(second).endswith(  # it said nothing of where its copy crossed
        "(z:6, copy 2 of 2) to mul(f) back 5.4 ms before sending it (told late: its copies crossed at lines 1 and 6)"
    )
    fresh = Explainer(compile_source("q = x + y; f = q * z"))
    fresh.tell("r", sent)
    first = delay.model_copy(update={"note": "copy 1 of 2"})  # the other copy may be the one that crossed
    assert "back 5.4 ms before sending it (told late: a copy crossed at line 1; a gate tells" in fresh.fault(first)


def test_a_second_copy_in_step_mode_may_be_the_students() -> None:
    explainer = Explainer(compile_source("x * y"), duplicated_by="you, in step mode, or the fault injector")
    report = TraceMsg(id="x:4", src="x", dest=(ORCHESTRATOR,), phase="report", topic=topic("c", "report", "x"))
    explainer.tell("r", report)
    assert "(you, in step mode, or the fault injector duplicated it)" in explainer.tell("r", report)


def test_a_dropped_gradient_is_told_with_its_step_unless_a_crossing_told_it() -> None:
    """q's gradient to x is dropped before its gradient to y crosses (a delay held it back):
    the drop tells q's step, and the crossing after it says it is the same step."""
    explainer, carried, first_of_q = told_up_to_the_first_gradient_of("q")
    dropped = TraceMsg(id="q:9", src="q", dest=("x",), phase="backward", topic=topic("c", "grad", "x"), grad=-4.0)
    assert explainer.dropped(dropped, "r") == (
        f"{first_of_q + 1:>3}. add(q) got grad -4 from mul(f); local grads [1, 1]; sends -4 to x and -4 to y; "
        "the fault injector drops add(q)'s backward message (q:9) to x: it never reaches the broker"
    )
    to_y = next(m for _, m in carried if isinstance(m, Backward) and m.sender == "q" and m.port == 1)
    assert explainer.explain(topic("c", "grad", "y"), to_y).endswith(
        "add(q) sends its gradient -4 to y (same step as above)"
    )
    again = dropped.model_copy(update={"id": "q:10"})  # a gradient dropped after its step was told
    assert explainer.dropped(again, "r").endswith(
        ". the fault injector drops add(q)'s backward message (q:10) to x: it never reaches the broker"
    )


def test_a_dropped_forward_value_is_told_with_the_step_that_computed_it() -> None:
    """No crossing tells the step of a gate whose value was dropped: its drop does."""
    circuit = compile_source("q = x + y; f = q * z")
    explainer = Explainer(circuit)
    for name, message in one_pass(circuit, {"x": -2, "y": 5, "z": -4})[:5]:  # the feeds, then x's and y's values
        explainer.explain(name, message)
    dropped = TraceMsg(id="q:7", src="q", dest=("f",), phase="forward", topic=topic("c", "fwd", "q"), value=3.0)
    assert explainer.dropped(dropped, "r") == (
        "  6. add(q) got -2 from x and 5 from y; computes -2 + 5 = 3; "
        "the fault injector drops add(q)'s forward message (q:7) to mul(f): it never reaches the broker"
    )


def test_a_gradient_or_a_report_held_back_is_told_with_the_step_that_made_it() -> None:
    """A gate's events come right after its last step, before what the injector held back: the
    delay was told before the step that made the message ("holds mul(f)'s backward message back",
    then "mul(f) got grad 1 ..."). The delay now tells the step, and the crossing after it says
    it is the same step."""
    explainer, carried, first_of_f = told_up_to_the_first_gradient_of("f")
    at = {"t_ns": 1, "run": "r", "host": "local", "lamport": 9, "vc": {"f": 9}}
    to_z = TraceMsg(id="f:9", src="f", dest=("z",), phase="backward", topic=topic("c", "grad", "z"), grad=3.0, port=1)
    held = TraceEvent.model_validate({**at, "node": "f", "type": "delay", "msg": to_z, "delay_ms": 13.3})
    assert explainer.fault(held) == (
        f"{first_of_f + 1:>3}. mul(f) got grad 1 from the orchestrator; local grads [-4, 3]; sends -4 to add(q) "
        "and 3 to z; the fault injector holds mul(f)'s backward message (f:9) to z back 13.3 ms before sending it"
    )
    rest = carried[first_of_f:]
    for i, (name, message) in enumerate(rest[:2]):  # f's two gradients cross; the second names its step's line
        same = "(same step as above)" if i == 0 else f"(same step as line {first_of_f + 1})"
        assert explainer.explain(name, message).endswith(same)
    report = next(m for _, m in rest if isinstance(m, GradReport) and m.sender == "z")
    sent = msg_fields(topic("c", "report", "z"), report, stamped=False)
    assert sent is not None
    late_report = TraceMsg.model_validate({**sent, "id": "z:12"})
    z_held = TraceEvent.model_validate({**at, "node": "z", "type": "delay", "msg": late_report, "delay_ms": 12.3})
    assert explainer.fault(z_held).endswith(
        ". z got grad 3 from mul(f); reports df/dz = 3 to the orchestrator; "
        "the fault injector holds z's report message (z:12) back 12.3 ms before sending it"
    )
    assert explainer.explain(topic("c", "report", "z"), report).endswith(
        ". z reports df/dz = 3 to the orchestrator (same step as above)"
    )


def test_a_students_drop_is_told_where_the_student_drops_it() -> None:
    """A drop in step mode is the stepper's, beside the orchestrator: its line named the
    sender's host, as if the gate had dropped it."""
    circuit = compile_source("x * y")
    explainer = Explainer(circuit, {"x": "h1", "y": "h1", "f": "h2"})
    value = TraceMsg(id="x:2", src="x", dest=("f",), phase="forward", topic=topic("c", "fwd", "x"), value=3.0)
    assert explainer.dropped(value, "r", by_student=True).startswith("  1. orchestrator | you drop x's forward message")
    assert explainer.dropped(value, "r").startswith("  2. h1           | the fault injector drops x's forward message")


def test_a_dropped_gradient_of_a_gate_reading_one_input_twice_says_which_input() -> None:
    """x*x sends x two gradients: the sentence of a dropped one said only "to x", while the
    step-mode list and the choices said "as mul_1's input 2". (Told with no forward value heard
    before it, the step's sentence had crashed on local gradients it could not know.)"""
    explainer = Explainer(compile_source("x*x + y"), None)
    lost = TraceMsg(id="mul_1:19", src="mul_1", dest=("x",), phase="backward", topic=topic("c", "grad", "x"), port=1)
    assert "you drop mul(mul_1)'s backward message (mul_1:19) to x (as its input 2) in step mode" in (
        explainer.dropped(lost, "r", by_student=True)
    )
    other = TraceMsg(id="f:7", src="f", dest=("y",), phase="backward", topic=topic("c", "grad", "y"), port=1)
    assert "backward message (f:7) to y in step mode" in explainer.dropped(other, "r", by_student=True)


def test_a_constants_report_says_the_result_does_not_list_it() -> None:
    """Example 6's log said "const(const_1) ... reports df/dconst_1 = 0.718124", and the result had
    no such gradient: a constant is a leaf and reports, but only the inputs' gradients are results."""
    circuit = compile_source("f = x * exp(2)")
    lines = told(circuit, {"x": 3})
    (constant,) = [line for line in lines if "reports df/dconst" in line]  # d(x e^c)/dc = x e^c = 3 e^2
    assert constant.endswith(
        "reports df/dconst_1 = 22.1672 to the orchestrator (a constant's: the result lists the inputs' alone)"
    ), constant
    (input_x,) = [line for line in lines if "reports df/dx" in line]
    assert input_x.endswith("reports df/dx = 7.38906 to the orchestrator")
