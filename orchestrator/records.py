"""A deployment's record on the broker: a small head, and its circuit in parts.

The whole record of a 65,000-gate circuit (every gate, where it runs) is ~6.7 MB of JSON, over
the 2,000,000 bytes a broker of ours accepts in one packet (broker/mosquitto.conf's
`max_packet_size`; Mosquitto drops a client that sends more). So the head, retained on
gatemesh-sys/deployments/NAME, says what the deployment is and how many parts it has, and each
part, retained on gatemesh-sys/deployments/NAME/part/I, carries up to PART_GATES gates, each
with the host that runs it. Readers assemble them (`assemble`) and check that every part is
there and belongs to the head's circuit id.

A record of an older gatemesh, one message with the whole circuit, is still read as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gates.protocol import Incarnation, Name, deployment_topic
from orchestrator.circuit import Circuit, GateDef

DEPLOYMENT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$"
"""A deployment's name: its circuit id adds `.` and 8 hex digits, and must stay a Name."""
PART_GATES = 1000
"""Gates per part. A placed gate is at most ~600 bytes of JSON (its id, its at most two inputs
and its host are names of at most 128 characters; its op a word; its parameter one float), so a
part is at most ~600 KB, well under 2,000,000 bytes; typically 60-110 KB."""
HEAD_INPUTS = 1000
"""A head lists its circuit's inputs (for watchers such as the page) when there are at most this
many: at most ~130 KB. Beyond, it gives only their number; the parts hold them all."""


TRANSIENT = (
    "made for one run and taken down after it (`gatemesh run --hosts`, the web page's runs on its hosts): "
    "not a live deployment for others to run on"
)


class DeploymentRecord(BaseModel):
    """A deployment, whole: what `deploy_to_hosts` makes and readers assemble from its head and parts.

    Also what gatemesh retained before records had parts (a single message, `parts` absent),
    which readers still accept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["deployment"] = "deployment"
    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN)
    circuit_id: Name = Field(description="the topic prefix of this deployment: gatemesh/<circuit_id>/...")
    circuit: Circuit
    placement: dict[Name, Name] = Field(description="gate id -> host name")
    hosts: dict[Name, Incarnation] = Field(description="host name -> the incarnation its gates were given to")
    created: float = Field(default_factory=time.time)
    parts: int = Field(default=0, ge=0, description="part messages on the broker; 0: one message (older records)")
    transient: bool = Field(default=False, description=TRANSIENT)

    def gates_on(self, host: str) -> list[str]:
        return [gate for gate, placed in self.placement.items() if placed == host]


class DeploymentHead(BaseModel):
    """What gatemesh-sys/deployments/NAME retains: the deployment without its gates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["deployment"] = "deployment"
    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN)
    circuit_id: Name
    circuit_name: Name
    output: Name
    gates: int = Field(ge=1)
    inputs: tuple[Name, ...] | int = Field(description="the input ids, or their number past HEAD_INPUTS")
    parts: int = Field(ge=1)
    hosts: dict[Name, Incarnation]
    created: float
    transient: bool = Field(default=False, description=TRANSIENT)

    @property
    def input_count(self) -> int:
        return self.inputs if isinstance(self.inputs, int) else len(self.inputs)


class PlacedGate(GateDef):
    """A gate of the circuit, with the host that runs it."""

    host: Name


class DeploymentPart(BaseModel):
    """What gatemesh-sys/deployments/NAME/part/I retains: gates of the circuit, in circuit order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["deployment_part"] = "deployment_part"
    circuit_id: Name
    index: int = Field(ge=0)
    gates: tuple[PlacedGate, ...] = Field(min_length=1)


class RecordError(ValueError):
    """A deployment record that cannot be assembled: the message names what is missing or wrong."""


RETAINED_RECORD: TypeAdapter[DeploymentHead | DeploymentRecord] = TypeAdapter(DeploymentHead | DeploymentRecord)
"""What a deployment's topic may hold: a head, or an older single-message record."""


def part_topic(name: str, index: int | str) -> str:
    """Where part `index` of deployment `name`'s record is retained ('+' gives the filter for all)."""
    return f"{deployment_topic(name)}/part/{index}"


def with_parts(record: DeploymentRecord, part_gates: int = PART_GATES) -> DeploymentRecord:
    """The record, to be published in ceil(gates / part_gates) parts."""
    if part_gates < 1:
        raise ValueError(f"part_gates must be at least 1, not {part_gates}")
    return record.model_copy(update={"parts": math.ceil(len(record.circuit.gates) / part_gates)})


def head_of(record: DeploymentRecord) -> DeploymentHead:
    inputs = record.circuit.inputs
    return DeploymentHead(
        name=record.name,
        circuit_id=record.circuit_id,
        circuit_name=record.circuit.name,
        output=record.circuit.output,
        gates=len(record.circuit.gates),
        inputs=tuple(inputs) if len(inputs) <= HEAD_INPUTS else len(inputs),
        parts=max(record.parts, 1),
        hosts=record.hosts,
        created=record.created,
        transient=record.transient,
    )


def parts_of(record: DeploymentRecord) -> list[DeploymentPart]:
    """The record's gates in `record.parts` parts of (nearly) equal size, in circuit order."""
    gates = record.circuit.gates
    size = math.ceil(len(gates) / max(record.parts, 1))
    return [
        DeploymentPart(
            circuit_id=record.circuit_id,
            index=index,
            gates=tuple(
                PlacedGate.model_construct(**dict(g), host=record.placement[g.id]) for g in gates[start : start + size]
            ),
        )
        for index, start in enumerate(range(0, len(gates), size))
    ]


def retained_messages(record: DeploymentRecord) -> list[tuple[str, BaseModel]]:
    """The record as retained messages: its parts, then its head (a reader that finds the head
    finds its parts, once each publish has been acknowledged in that order)."""
    parts: list[tuple[str, BaseModel]] = [(part_topic(record.name, p.index), p) for p in parts_of(record)]
    return [*parts, (deployment_topic(record.name), head_of(record))]


def retained_topics(record: DeploymentRecord) -> list[str]:
    """Every topic the record occupies: its head's first (deleted first, no one finds it half gone)."""
    return [deployment_topic(record.name), *(part_topic(record.name, i) for i in range(record.parts))]


def assemble(head: DeploymentHead, parts: Mapping[int, bytes]) -> DeploymentRecord:
    """The whole record from its head and the retained parts (index -> payload); RecordError if a
    part is missing, unreadable or of another circuit id, or the gates do not add up."""
    where = f"deployment {head.name} ({head.circuit_id})"
    gates: list[PlacedGate] = []
    for index in range(head.parts):
        payload = parts.get(index)
        if payload is None:
            raise RecordError(f"{where}: part {index} of {head.parts} is missing on the broker")
        try:
            part = DeploymentPart.model_validate_json(payload)
        except ValidationError as exc:
            raise RecordError(f"{where}: part {index} is not a valid part: {_first(exc)}") from None
        if part.circuit_id != head.circuit_id or part.index != index:
            raise RecordError(
                f"{where}: part {index} belongs to {part.circuit_id} (as its part {part.index}), "
                "not to this deployment: the record is being replaced or deleted; try again"
            )
        gates += part.gates
    if len(gates) != head.gates:
        raise RecordError(f"{where}: its {head.parts} part(s) hold {len(gates)} gates, its head says {head.gates}")
    try:
        circuit = Circuit(
            name=head.circuit_name,
            gates=tuple(GateDef(id=g.id, op=g.op, inputs=g.inputs, param=g.param) for g in gates),
            output=head.output,
        )
    except ValidationError as exc:
        raise RecordError(f"{where}: its parts do not make a valid circuit: {_first(exc)}") from None
    return DeploymentRecord(
        name=head.name,
        circuit_id=head.circuit_id,
        circuit=circuit,
        placement={g.id: g.host for g in gates},
        hosts=head.hosts,
        created=head.created,
        parts=head.parts,
        transient=head.transient,
    )


def _first(exc: ValidationError) -> str:
    """The first error, where it is and what (a check of the whole record, such as a cycle, by itself)."""
    error = exc.errors(include_url=False)[0]
    said = error["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {said}" if where else said
