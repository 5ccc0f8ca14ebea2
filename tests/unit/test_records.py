"""A deployment's record in parts (orchestrator/records.py): split, assembled, checked, and small."""

from __future__ import annotations

import pytest

from gates.protocol import NAME_MAX_LENGTH, deployment_topic
from gates.transport import encode
from orchestrator.circuit import Circuit, GateDef
from orchestrator.compiler import compile_source
from orchestrator.records import (
    HEAD_INPUTS,
    PART_GATES,
    RETAINED_RECORD,
    DeploymentHead,
    DeploymentPart,
    DeploymentRecord,
    RecordError,
    assemble,
    part_topic,
    retained_messages,
    retained_topics,
    with_parts,
)

MAX_PACKET = 2_000_000
"""broker/mosquitto.conf's max_packet_size: every retained message must stay well under it."""


def record_of(circuit: Circuit, part_gates: int, hosts: tuple[str, ...] = ("h0", "h1")) -> DeploymentRecord:
    placement = {g.id: hosts[i % len(hosts)] for i, g in enumerate(circuit.gates)}
    record = DeploymentRecord(
        name="neuron",
        circuit_id="neuron.0badcafe",
        circuit=circuit,
        placement=placement,
        hosts={h: f"{i:08x}" for i, h in enumerate(hosts)},
        created=1795766400.0,
    )
    return with_parts(record, part_gates)


NEURON = compile_source("sigmoid(w0*x0 + w1*x1 + w2)")  # 10 gates


def split(record: DeploymentRecord) -> tuple[DeploymentHead, dict[int, bytes]]:
    messages = retained_messages(record)
    head_topic, head = messages[-1]
    assert head_topic == deployment_topic(record.name)
    assert isinstance(head, DeploymentHead)
    parts = {int(name.rsplit("/", 1)[1]): encode(part) for name, part in messages[:-1]}
    assert [name for name, _ in messages[:-1]] == [part_topic(record.name, i) for i in range(len(parts))]
    return head, parts


@pytest.mark.parametrize(("part_gates", "parts"), [(1, 10), (3, 4), (4, 3), (10, 1), (1000, 1)])
def test_a_record_split_into_parts_assembles_to_itself(part_gates: int, parts: int) -> None:
    record = record_of(NEURON, part_gates)
    assert record.parts == parts
    head, payloads = split(record)
    assert len(payloads) == head.parts == parts
    assert (head.gates, head.inputs, head.output) == (10, ("w0", "x0", "w1", "x1", "w2"), NEURON.output)
    again = assemble(DeploymentHead.model_validate_json(encode(head)), payloads)
    assert again == record
    one_run = record.model_copy(update={"transient": True})  # made for one run: the head says so too
    head, payloads = split(one_run)
    assert head.transient
    assert assemble(DeploymentHead.model_validate_json(encode(head)), payloads) == one_run
    assert retained_topics(record) == [deployment_topic("neuron"), *(part_topic("neuron", i) for i in range(parts))]


def test_a_missing_or_foreign_part_is_named() -> None:
    head, parts = split(record_of(NEURON, 3))
    with pytest.raises(RecordError, match=r"deployment neuron \(neuron.0badcafe\): part 2 of 4 is missing"):
        assemble(head, {i: p for i, p in parts.items() if i != 2})
    foreign = DeploymentPart.model_validate_json(parts[1]).model_copy(update={"circuit_id": "neuron.12345678"})
    with pytest.raises(RecordError, match=r"part 1 belongs to neuron.12345678 \(as its part 1\)"):
        assemble(head, {**parts, 1: encode(foreign)})
    with pytest.raises(RecordError, match="part 0 is not a valid part: gates: "):
        assemble(head, {**parts, 0: b'{"type": "deployment_part", "circuit_id": "neuron.0badcafe", "index": 0}'})
    short = head.model_copy(update={"gates": 11})
    with pytest.raises(RecordError, match=r"its 4 part\(s\) hold 10 gates, its head says 11"):
        assemble(short, parts)


def test_parts_that_do_not_make_a_circuit_are_refused() -> None:
    head, parts = split(record_of(NEURON, 5))
    tampered = DeploymentPart.model_validate_json(parts[0])
    gates = (tampered.gates[0].model_copy(update={"op": "teleport"}), *tampered.gates[1:])
    with pytest.raises(RecordError, match="its parts do not make a valid circuit"):
        assemble(head, {**parts, 0: encode(tampered.model_copy(update={"gates": gates}))})


def test_an_older_single_message_record_is_still_read() -> None:
    record = record_of(NEURON, 1000).model_copy(update={"parts": 0})
    read = RETAINED_RECORD.validate_json(record.model_dump_json(exclude={"parts"}))
    assert isinstance(read, DeploymentRecord)
    assert read == record
    assert retained_topics(read) == [deployment_topic("neuron")]  # undeploy deletes just that one message


def test_a_part_of_the_longest_gates_stays_well_under_the_broker_s_packet_limit() -> None:
    """The bound PART_GATES rests on: names of NAME_MAX_LENGTH, two inputs, a parameter, a host."""

    def name(prefix: str, i: int) -> str:
        return (f"{prefix}{i}_" + "x" * NAME_MAX_LENGTH)[:NAME_MAX_LENGTH]

    gates = [GateDef(id=name("a", 0), op="input"), GateDef(id=name("b", 0), op="input")]
    for i in range(PART_GATES):
        gates.append(GateDef(id=name("g", i), op="pow", inputs=(gates[-1].id,), param=-1.2345678901234567e-300))
        gates.append(GateDef(id=name("m", i), op="mul", inputs=(gates[-1].id, gates[-2].id)))
    circuit = Circuit(name=name("c", 0), gates=tuple(gates), output=gates[-1].id)
    hosts = tuple(name("h", i) for i in range(3))
    messages = retained_messages(record_of(circuit, PART_GATES, hosts))
    sizes = [len(encode(message)) + len(topic) for topic, message in messages]
    assert len(sizes) == 4  # 2,002 gates: three parts and the head
    assert max(sizes) < MAX_PACKET / 3, sizes


def test_a_head_lists_its_inputs_only_up_to_a_bound() -> None:
    few = compile_source(" + ".join(f"x{i}" for i in range(HEAD_INPUTS)))
    many = compile_source(" + ".join(f"x{i}" for i in range(HEAD_INPUTS + 1)))
    few_head, _ = split(record_of(few, PART_GATES))
    many_head, _ = split(record_of(many, PART_GATES))
    assert few_head.inputs == tuple(few.inputs)
    assert (many_head.inputs, many_head.input_count) == (HEAD_INPUTS + 1, HEAD_INPUTS + 1)
    assert len(encode(few_head)) < 20_000
