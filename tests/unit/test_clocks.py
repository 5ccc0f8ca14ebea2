"""Logical clocks as the textbook defines them, and messages unchanged when a run is not traced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gates.clocks import Clock, Stamp, concurrent, happened_before, named
from gates.core import GateCore
from gates.protocol import MESSAGE_ADAPTER, ErrorReport, Feed, Forward, GateSpec, topic
from gates.trace_records import CLOCK_KEY
from gates.tracing import Fact, GateTracer
from gates.transport import encode
from orchestrator.compiler import compile_source

NODES = ("p", "q")
"""Two nodes, numbered 0 and 1 (a deployment numbers its nodes: Circuit.nodes)."""


def test_send_ticks_and_receive_merges_then_ticks() -> None:
    p, q = Clock("p", 0), Clock("q", 1)
    p.tick()  # a local event at p
    sent = p.send()
    assert (sent.lamport, sent.vc) == (2, [2])  # nothing of q yet: the list ends at its last count
    for _ in range(5):
        q.tick()
    got = q.receive(sent)
    assert (got.lamport, got.vc) == (6, [2, 6])  # max(5, 2) + 1; q's own entry ticks after the merge
    back = q.send()
    again = p.receive(back)
    assert (again.lamport, again.vc) == (8, [3, 7])
    assert named(again.vc, NODES) == {"p": 3, "q": 7}
    sent_vc, got_vc, again_vc = (named(stamp.vc, NODES) for stamp in (sent, got, again))
    assert happened_before(sent_vc, got_vc)
    assert happened_before(got_vc, again_vc)
    assert not happened_before(got_vc, sent_vc)


def test_a_vector_ends_at_its_last_count_and_grows_as_it_hears_of_nodes() -> None:
    low, high = Clock("low", 1), Clock("high", 4)
    assert low.send().vc == [0, 1]
    assert high.send().vc == [0, 0, 0, 0, 1]
    assert low.merge(high.send()) == {4: 2, 1: 2}  # the entries the receive changed: what a gate's batch carries
    assert low.stamp().vc == [0, 2, 0, 0, 2]
    assert named(low.stamp().vc, ("orchestrator", "low", "a", "b", "high")) == {"low": 2, "high": 2}


def test_a_clock_must_be_a_list_of_counts_of_nodes_the_deployment_has() -> None:
    with pytest.raises(ValidationError, match=r"vc\n  Input should be a valid array"):
        Stamp.model_validate_json('{"lamport": 2, "vc": {"p": 2}}')
    with pytest.raises(ValidationError, match=r"vc\.1\n  Input should be greater than or equal to 0"):
        Stamp.model_validate_json('{"lamport": 2, "vc": [2, -1]}')
    with pytest.raises(ValueError, match="a vector clock of 3 entries, for 2 nodes"):
        named([1, 0, 1], NODES)
    # past 2**53 - 1 a count is no longer read exactly by the web page (JavaScript) or ShiViz
    assert Stamp.model_validate_json(f'{{"lamport": {2**53 - 1}, "vc": [{2**53 - 1}]}}').lamport == 2**53 - 1
    with pytest.raises(ValidationError, match=r"lamport\n  Input should be less than or equal to 9007199254740991"):
        Stamp.model_validate_json(f'{{"lamport": {2**80}, "vc": [1]}}')
    with pytest.raises(ValidationError, match=r"vc\.0\n  Input should be less than or equal to 9007199254740991"):
        Stamp.model_validate_json(f'{{"lamport": 2, "vc": [{2**53}]}}')


def test_independent_events_are_concurrent() -> None:
    p, q = Clock("p", 0), Clock("q", 1)
    a, b = p.tick(), q.tick()
    assert concurrent(named(a.vc, NODES), named(b.vc, NODES))
    assert a.lamport == b.lamport == 1


def test_untraced_messages_are_byte_for_byte_what_they_were() -> None:
    feed = Feed(circuit="c", sender="orchestrator", run="r1", value=None)
    forward = Forward(circuit="c", sender="q", run="r1", value=3.0)
    assert encode(feed) == b'{"circuit":"c","sender":"orchestrator","type":"feed","run":"r1","value":null}'
    assert encode(forward) == b'{"circuit":"c","sender":"q","type":"forward","run":"r1","value":3.0}'
    assert CLOCK_KEY not in encode(forward)
    stamped = forward.model_copy(update={"clock": Clock("q", 3).send()})
    assert b'"clock":{"lamport":1,"vc":[0,0,0,1]}' in encode(stamped)
    assert CLOCK_KEY in encode(stamped)
    assert MESSAGE_ADAPTER.validate_json(encode(stamped)) == stamped


def noted(fact: Fact) -> dict[str, object]:
    """A fact's type, Lamport clock and other fields, by name."""
    kind, _, lamport, _, _, _, fields = fact
    return {"type": kind, "lamport": lamport, **(fields or {})}


def test_a_gate_stamps_its_messages_only_in_a_traced_run() -> None:
    spec = GateSpec(id="q", index=3, op="add", inputs=("x", "y"), consumers=1)
    core = GateCore(spec, "c")
    tracer = GateTracer("q", 3, spec.inputs, "c", "h1")
    orchestrator, x, y = Clock("orchestrator", 0), Clock("x", 1), Clock("y", 2)
    x.receive(orchestrator.send())
    y.receive(orchestrator.send())
    outputs = []
    for sender, clock, value in (("x", x, -2.0), ("y", y, 5.0)):
        payload = encode(Forward(circuit="c", sender=sender, run="r", value=value, clock=clock.send()))
        outgoing = [(o.topic, o.message) for o in core.handle(topic("c", "fwd", sender), payload)]
        run, stamped, facts = tracer.step(topic("c", "fwd", sender), payload, outgoing)
        outputs.append((run, stamped, [noted(fact) for fact in facts]))
    (_, nothing, first), (_, sent, second) = outputs
    assert nothing == []
    assert [e["type"] for e in first] == ["receive"]
    assert [e["type"] for e in second] == ["receive", "compute", "send"]
    compute, send = second[1], second[2]
    assert (compute["inputs"], compute["value"]) == ([-2.0, 5.0], 3.0)
    message = sent[0][1]
    assert isinstance(message, Forward)
    assert message.value == 3.0
    assert message.clock is not None
    # q merged both senders' clocks: x's send (x=2) and y's send (y=2), after the two feeds
    assert message.clock.vc == [2, 2, 2, 4]  # orchestrator, x, y, q
    # x's send is at lamport 3, y's at 4 (each after a feed of lamport 1 or 2); q: receive 4, receive
    # max(4, 4) + 1 = 5, compute 6, send 7
    assert [e["lamport"] for e in first + second] == [4, 5, 6, 7]
    assert send["lamport"] == message.clock.lamport == 7
    assert tracer.batch("r", []) == []  # q's part is not over: its events wait for its backward step


def test_a_gate_refuses_a_clock_longer_than_its_deployment_numbers_nodes() -> None:
    """A gate keeps a run's vector clock for 1,024 runs: one forged message naming a million
    nodes would make it keep 8 MB a run. The spec says how many nodes there are."""
    circuit = compile_source("x*y")
    spec = circuit.spec(circuit.gates[-1])
    assert (spec.index, spec.nodes) == (3, 4)  # orchestrator, x, y, the product
    core = GateCore(spec, "c")
    fits = Forward(circuit="c", sender="x", run="r", value=2.0, clock=Stamp(lamport=1, vc=[0, 1, 0, 0]))
    forged = fits.model_copy(update={"run": "s", "clock": Stamp(lamport=1, vc=[0, 1, 0, 0, 0])})
    message, outgoing = core.receive(topic("c", "fwd", "x"), encode(forged))
    assert message is None
    (error,) = (out.message for out in outgoing)
    assert isinstance(error, ErrorReport)
    assert (error.code, error.message) == ("bad_schema", "clock.vc: 5 entries, for a deployment of 4 nodes")
    assert core.open_runs == 0
    # nor by naming another circuit: its clock was kept, and a trace batch sent for its run
    elsewhere = forged.model_copy(update={"circuit": "other", "clock": Stamp(lamport=1, vc=[0] * 50_000 + [1])})
    message, outgoing = core.receive(topic("c", "fwd", "x"), encode(elsewhere))
    assert message is None
    (error,) = (out.message for out in outgoing)
    assert isinstance(error, ErrorReport)
    assert (error.code, error.message) == ("bad_schema", "clock.vc: 50001 entries, for a deployment of 4 nodes")
    other = elsewhere.model_copy(update={"clock": Stamp(lamport=1, vc=[0, 1])})
    message, outgoing = core.receive(topic("c", "fwd", "x"), encode(other))
    assert message is None  # nothing of this gate's runs: nothing traced
    assert [getattr(out.message, "code", None) for out in outgoing] == ["wrong_circuit"]
    message, outgoing = core.receive(topic("c", "fwd", "x"), encode(fits))
    assert message == fits
    assert (outgoing, core.open_runs) == ([], 1)  # waits for y


def test_a_spec_numbers_its_gate_within_its_deployment() -> None:
    with pytest.raises(ValidationError, match="index 4 is not a node of a deployment of 4"):
        GateSpec(id="q", index=4, op="add", inputs=("x", "y"), consumers=1, nodes=4)
