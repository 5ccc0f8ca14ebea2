"""Step mode's protocol (gates/held.py) and the page's requests (web/commands.py), without a broker."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from gates.clocks import Stamp
from gates.faults import Faults
from gates.held import HELD_KEY, held_filter, held_topic, hold, real_topic
from gates.protocol import Backward, ErrorCode, ErrorReport, Feed, Forward, GradReport, topic
from gates.transport import BrokerAddress, encode
from orchestrator.compiler import compile_source
from web.commands import Act, BadRequest, FaultRates, Run, parse_request
from web.stepper import Stepper, describe


def test_held_topics_map_both_ways_for_data_messages_only() -> None:
    for kind in ("feed", "fwd", "grad", "report"):
        real = topic("C", kind, "g")
        held = held_topic(real)
        assert held == f"gatemesh/C/held/{kind}/g"
        assert real_topic(held) == real
    for kind in ("ready", "status", "error", "trace"):
        assert held_topic(topic("C", kind, "g")) is None  # type: ignore[arg-type]
    assert held_topic(topic("C", "control")) is None
    assert real_topic("gatemesh/C/held/ready/g") is None
    assert real_topic("gatemesh/C/held/fwd/a/b") is None
    assert held_filter("C") == "gatemesh/C/held/#"


def test_an_unheld_message_is_byte_for_byte_what_it_was() -> None:
    message = Forward(circuit="C", sender="x", run="r1", value=-2.0)
    assert encode(message) == b'{"circuit":"C","sender":"x","type":"forward","run":"r1","value":-2.0}'
    assert HELD_KEY not in encode(message)
    held = message.model_copy(update={"held": True})
    assert HELD_KEY in encode(held)
    assert Forward.model_validate_json(encode(held)).held


def test_hold_flags_and_moves_data_messages_and_nothing_else() -> None:
    batch: list[tuple[str, BaseModel]] = [
        (topic("C", "fwd", "q"), Forward(circuit="C", sender="q", run="r", value=3.0)),
        (topic("C", "grad", "x"), Backward(circuit="C", sender="q", run="r", port=0, grad=-4.0)),
        (topic("C", "report", "x"), GradReport(circuit="C", sender="x", run="r", grad=-4.0)),
        (topic("C", "feed", "x"), Feed(circuit="C", sender="orchestrator", run="r", value=-2.0)),
        (topic("C", "error", "q"), ErrorReport(circuit="C", sender="q", run="r", code=ErrorCode.DOMAIN, message="no")),
    ]
    held = hold(batch)
    assert [name for name, _ in held] == [
        "gatemesh/C/held/fwd/q",
        "gatemesh/C/held/grad/x",
        "gatemesh/C/held/report/x",
        "gatemesh/C/held/feed/x",
        "gatemesh/C/error/q",
    ]
    assert [getattr(m, "held", False) for _, m in held] == [True, True, True, True, False]


def test_the_stepper_reads_what_a_held_message_is() -> None:
    payload = encode(Backward(circuit="C", sender="f", run="r", port=1, grad=3.0, held=True))
    assert describe("gatemesh/C/held/grad/z", payload) == ("gatemesh/C/grad/z", "r", "backward", "f", 3.0, 1, "")
    traced = encode(
        Backward(circuit="C", sender="f", run="r", port=1, grad=3.0, held=True, clock=Stamp(lamport=7, vc=[1, 2]))
    )
    assert describe("gatemesh/C/held/grad/z", traced) == ("gatemesh/C/grad/z", "r", "backward", "f", 3.0, 1, "f:7")
    assert describe("gatemesh/C/held/grad/z", b"not json") is None
    assert describe("gatemesh/C/grad/z", payload) is None  # not a held topic


def test_requests_are_validated_and_errors_name_the_field() -> None:
    run = parse_request('{"type": "run", "source": "(x+y)*z", "inputs": {"x": -2}, "step": true}')
    assert isinstance(run, Run)
    assert run.step
    assert isinstance(run.inputs["x"], float)
    assert parse_request('{"type": "deliver", "id": "m12"}') == Act(type="deliver", id="m12")
    for bad, said in (
        ('{"type": "deliver", "id": "../x"}', "deliver.id: String should match pattern"),
        ('{"type": "run", "inputs": {"x": "NaN"}}', "run.inputs.x"),
        ('{"type": "run", "inputs": {"x/y": 1}}', "run.inputs.x/y.[key]"),
        ('{"type": "eval", "code": "1"}', "does not match any of the expected tags"),
        ('{"type": "run", "faults": {"drop": 2}}', "run.faults.drop: Input should be less than or equal to 1"),
        ("not json", "request: Invalid JSON"),
    ):
        with pytest.raises(BadRequest, match=rf"^bad request: .*{re.escape(said)}"):
            parse_request(bad)


def test_the_pages_faults_are_spelled_as_faults_writes_them() -> None:
    """What the page's run label and link say: only the faults that are on, `--faults`'s way,
    which reads them back the same (a delay from A to B ms, a reorder)."""
    assert FaultRates().text() == ""
    assert FaultRates(drop=0.1, seed=7).text() == "drop=0.1,seed=7"  # not "dup=0,delay=0-0ms"
    spelled = FaultRates(dup=0.25, delay_from_ms=5, delay_ms=15, reorder=True, seed=2).text()
    assert spelled == "dup=0.25,delay=5-15ms,reorder,seed=2"
    assert Faults.parse(spelled) == Faults(dup=0.25, delay_ms=(5, 15), reorder=True, seed=2)
    assert FaultRates(reorder=True).text() == "reorder"
    with pytest.raises(BadRequest, match=r"a delay from 20 ms to 5 ms: give the shorter first"):
        parse_request('{"type": "run", "faults": {"delay_from_ms": 20, "delay_ms": 5}}')


def test_a_gradient_says_its_port_only_where_the_port_tells_two_apart() -> None:
    """Every backward message said "(port 0)", the seed too, and the page never said what a port
    is. It is said where it matters: a gate that reads the same input twice (x*x) sends it two
    gradients, one for each of its inputs (numbered from 1, as the circuit figure's hover does)."""
    circuit = compile_source("x*x + y")
    assert circuit.read_twice == {("mul_1", "x")}
    stepper = Stepper(BrokerAddress(host="127.0.0.1", port=1), lambda: None)
    stepper.begin("r")
    stepper._readers, stepper._read_twice = circuit.readers, circuit.read_twice  # what watching the deployment sets
    for sender, to, port, lamport in (("mul_1", "x", 1, 9), ("f", "y", 1, 7)):
        clock = Stamp(lamport=lamport, vc=[1])
        message = Backward(circuit="C", sender=sender, run="r", port=port, grad=4.0, held=True, clock=clock)
        stepper._on_message(f"gatemesh/C/held/grad/{to}", encode(message))
    assert [held.label for held in stepper.pending.values()] == [
        "backward 4.00: mul_1 \u2192 x (mul_1:9, as mul_1's input 2)",
        "backward 4.00: f \u2192 y (f:7)",
    ]
