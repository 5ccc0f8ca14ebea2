"""The wire protocol: every message as a pydantic model, and the topic names.

Everything a gate needs to know travels in the JSON payload, so the protocol works on
MQTT 3.1.1 (no MQTT 5 properties). See docs/PROTOCOL.md for examples and tables.

Topics, for a deployed circuit `C` and a gate `G`:

    gatemesh/C/feed/G     orchestrator -> leaf G      Feed
    gatemesh/C/fwd/G      G -> every consumer of G     Forward
    gatemesh/C/grad/G     consumers of G -> G         Backward
    gatemesh/C/report/G   leaf G -> orchestrator      GradReport
    gatemesh/C/ready/G    G -> orchestrator           Ready
    gatemesh/C/status/G   G -> orchestrator           Status
    gatemesh/C/error/G    G -> anyone listening       ErrorReport
    gatemesh/C/control    orchestrator -> all gates   Release, Probe
    gatemesh/C/spec/G     orchestrator -> gate hosts  Assignment, or a tensor gate's TensorAssignment
                                                      (retained: the deployment itself)
    gatemesh/C/trace/G    G -> orchestrator           TraceBatch (only for traced runs)
    gatemesh/C/held/K/G   a held run's message of kind K (feed, fwd, grad, report), waiting
                          for a network actor to deliver it to gatemesh/C/K/G (gates/held.py)

and, outside any circuit, the cluster's own topics (retained, read by orchestrators):

    gatemesh-sys/hosts/H        host H               HostPresence (its last will says offline)
    gatemesh-sys/deployments/D  orchestrator          the record of deployment D
    gatemesh-sys/deployments/D/part/I                 a part of a big deployment's record

and a client's own, to know it has read every retained message (gates/transport.py):

    gatemesh-sys/sync/R         the plain text `sync`, on the connection that reads
    gatemesh-sys/sync/R/probe   a retained probe, read back and deleted
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from gates.clocks import MAX_NODES, Stamp

ROOT = "gatemesh"
SYSTEM_ROOT = "gatemesh-sys"
"""Hosts and deployment records live under their own root, so no circuit id can collide with them."""
ORCHESTRATOR = "orchestrator"
BROKER = "broker"
"""The node (and host) of a trace's `cross` event: a message passing the broker, as the
orchestrator sees it. Neither it nor ORCHESTRATOR can be a gate's id (orchestrator/circuit.py)."""
NAME_CHARACTERS = r"A-Za-z0-9_.\-"
NAME_MAX_LENGTH = 128
NAME_PATTERN = rf"^[A-Za-z_][{NAME_CHARACTERS}]{{0,{NAME_MAX_LENGTH - 1}}}$"
"""Gate ids, circuit ids and host names: safe inside an MQTT topic level (no '/', '+', '#')."""
NAME_RULE = f"a letter or '_' followed by letters, digits, '_', '.' or '-', {NAME_MAX_LENGTH} characters at most"
"""NAME_PATTERN in words, for error messages."""

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=1024)]


class ErrorCode(StrEnum):
    """Why a gate rejected a message or failed a run (the table in docs/PROTOCOL.md)."""

    BAD_JSON = "bad_json"
    BAD_SCHEMA = "bad_schema"
    WRONG_TOPIC = "wrong_topic"
    WRONG_CIRCUIT = "wrong_circuit"
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_RUN = "unknown_run"
    MISSING_VALUE = "missing_value"
    DOMAIN = "domain"
    EVICTED = "evicted"
    WRONG_STEP = "wrong_step"


RUN_FAILING_CODES = frozenset({ErrorCode.DOMAIN, ErrorCode.MISSING_VALUE, ErrorCode.EVICTED, ErrorCode.WRONG_STEP})
"""Codes that end their run: the run can never complete correctly after them."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    circuit: Name
    sender: Name
    clock: Stamp | None = Field(default=None, exclude_if=lambda clock: clock is None)
    """The sender's logical clocks, on the messages of a traced run only; absent (not null) otherwise,
    so an untraced run's payloads are byte for byte what they were before tracing existed."""
    held: bool = Field(default=False, exclude_if=lambda held: not held)
    """On the messages of a run in step mode only (gates/held.py): the receiver sends its own data
    messages for the run to the held topics, where they wait to be delivered. Absent otherwise."""


class GateSpec(BaseModel):
    """All a gate knows about the circuit: its op, its inputs and how many edges read it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name
    index: Annotated[int, Field(ge=1)] = Field(
        description="the gate's number in the deployment: its entry in a traced run's vector clocks "
        "(the orchestrator is 0; gates/clocks.py)"
    )
    op: str
    inputs: tuple[Name, ...] = ()
    param: Finite | None = None
    consumers: Annotated[int, Field(ge=0)] = Field(
        description="(consumer, port) edges that read this gate's output, the orchestrator's "
        "seed included for the output gate; the number of gradient contributions to wait for."
    )
    nodes: Annotated[int, Field(ge=2, le=MAX_NODES)] | None = Field(
        default=None,
        description="how many nodes the deployment numbers (the orchestrator and every gate): no "
        "vector clock of its runs is longer, and a gate refuses one that is (it would keep it per run)",
    )

    @model_validator(mode="after")
    def _numbered_within(self) -> GateSpec:
        if self.nodes is not None and self.index >= self.nodes:
            raise ValueError(f"index {self.index} is not a node of a deployment of {self.nodes}")
        return self


class Feed(_Message):
    """Starts a run at a leaf: the input's value, or just a trigger for a constant."""

    type: Literal["feed"] = "feed"
    run: RunId
    value: Finite | None = None


class Forward(_Message):
    """A gate's output value for one run, sent to its output topic."""

    type: Literal["forward"] = "forward"
    run: RunId
    value: Finite


class Backward(_Message):
    """One gradient contribution d(loss)/d(receiver) from one consumer edge (sender, port)."""

    type: Literal["backward"] = "backward"
    run: RunId
    port: Port
    grad: Finite


class GradReport(_Message):
    """A leaf's total gradient for one run: the run's answer for that input."""

    type: Literal["grad"] = "grad"
    run: RunId
    grad: Finite


class Ready(_Message):
    """A gate's subscriptions are acknowledged: messages sent to it from now on will arrive."""

    type: Literal["ready"] = "ready"


class Release(_Message):
    """Forget a run: the orchestrator gave up on it (timeout, error) and its state must go."""

    type: Literal["release"] = "release"
    run: RunId


class Probe(_Message):
    """Ask every gate where a run stands (used to name the gates a stuck run waits on)."""

    type: Literal["probe"] = "probe"
    run: RunId


class Status(_Message):
    """A gate's answer to a Probe."""

    type: Literal["status"] = "status"
    run: RunId
    state: Literal["unknown", "waiting_inputs", "waiting_grads", "finished"]
    missing_inputs: tuple[Name, ...] = ()
    grads_received: int = 0
    grads_expected: int = 0


class ErrorReport(_Message):
    """A rejected message or a failed computation, named by code, with a human reason."""

    type: Literal["error"] = "error"
    run: RunId | None = None
    code: ErrorCode
    message: str
    topic: str | None = None


Incarnation = Annotated[str, Field(pattern=r"^[0-9a-f]{8,32}$")]


class HostPresence(BaseModel):
    """A gate host's retained announcement on gatemesh-sys/hosts/H.

    `incarnation` is fresh each time a host process starts: gates are assigned to one
    incarnation, so a host that dies and comes back under the same name is a new host and
    never restarts the gates of its previous life. The host's MQTT last will is this message
    with `state: offline`, so the broker itself announces a host whose connection is lost.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: Literal["host"] = "host"
    host: Name
    incarnation: Incarnation
    state: Literal["online", "offline"]
    reason: str = ""
    machine: str = ""
    pid: int | None = None
    faults: str = ""
    """What the host's fault injector does to its gates' messages, as `--faults` writes it ("" for nothing):
    a trace of a run on the host says so."""


class Assignment(_Message):
    """Run this gate: retained on gatemesh/C/spec/G; only host `host` in `incarnation` obeys it."""

    type: Literal["assign"] = "assign"
    host: Name
    incarnation: Incarnation
    spec: GateSpec


Message = Annotated[
    Feed | Forward | Backward | GradReport | Ready | Release | Probe | Status | ErrorReport,
    Field(discriminator="type"),
]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)

TopicKind = Literal["feed", "fwd", "grad", "report", "ready", "status", "error", "spec", "control", "trace"]
_TOPIC_RE = re.compile(rf"^{ROOT}/([^/]+)/(feed|fwd|grad|report|ready|status|error|spec|trace)/([^/]+)$")
_CONTROL_RE = re.compile(rf"^{ROOT}/([^/]+)/control$")


def what_is_wrong(exc: ValidationError, most: int = 3) -> str:
    """A message that failed validation, in a line: where (a field's path, `payload` for the
    whole) and what, for its first `most` errors."""
    errors = exc.errors(include_url=False)[:most]
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in errors)


def topic(circuit: str, kind: TopicKind, gate: str | None = None) -> str:
    """The topic of `kind` for `gate` in `circuit` ('+' as gate gives a subscription filter)."""
    if kind == "control":
        return f"{ROOT}/{circuit}/control"
    assert gate is not None, f"the {kind} topic belongs to one gate"
    return f"{ROOT}/{circuit}/{kind}/{gate}"


def parse_topic(name: str) -> tuple[str, TopicKind, str | None] | None:
    """(circuit, kind, gate) of a gatemesh topic, or None for any other topic."""
    if m := _TOPIC_RE.match(name):
        kind: TopicKind = m.group(2)  # type: ignore[assignment]
        return m.group(1), kind, m.group(3)
    if m := _CONTROL_RE.match(name):
        return m.group(1), "control", None
    return None


def host_topic(host: str) -> str:
    """Where host `host` announces itself ('+' gives the filter for every host)."""
    return f"{SYSTEM_ROOT}/hosts/{host}"


def deployment_topic(name: str) -> str:
    """Where the record of deployment `name` is retained ('+' gives the filter for all)."""
    return f"{SYSTEM_ROOT}/deployments/{name}"


def last_level(topic_name: str) -> str:
    return topic_name.rsplit("/", 1)[-1]
