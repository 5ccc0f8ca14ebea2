"""docs/PROTOCOL.md and gates/protocol.py must say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

import gates.errors as errors
import gates.protocol as protocol
from gates.ops import OPS
from gates.protocol import (
    MESSAGE_ADAPTER,
    RUN_FAILING_CODES,
    Assignment,
    ErrorCode,
    GateSpec,
    HostPresence,
    deployment_topic,
    host_topic,
    parse_topic,
    topic,
)
from gates.trace_records import TraceBatch
from orchestrator.records import DeploymentHead, DeploymentPart, part_topic

DOC = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()


def test_error_table_matches_the_code() -> None:
    section = DOC.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (yes|no) \|", section, flags=re.MULTILINE)
    assert {code for code, _ in rows} == {c.value for c in ErrorCode}
    assert {code for code, definite in rows if definite == "yes"} == {c.value for c in RUN_FAILING_CODES}


def test_every_json_example_is_a_valid_message() -> None:
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC, flags=re.DOTALL)]
    cluster: dict[str, type[BaseModel]] = {
        "assign": Assignment,
        "host": HostPresence,
        "deployment": DeploymentHead,
        "deployment_part": DeploymentPart,
        "trace": TraceBatch,
    }
    kinds = set()
    for example in examples:
        if example.get("type") in cluster:
            kinds.add(cluster[example["type"]].model_validate_json(json.dumps(example)).type)  # type: ignore[attr-defined]
        elif "type" in example:
            kinds.add(MESSAGE_ADAPTER.validate_json(json.dumps(example)).type)  # as it comes: JSON text
        else:
            GateSpec.model_validate(example)
    documented_types = {"feed", "forward", "backward", "grad", "ready", "release", "probe", "status", "error"}
    assert kinds == documented_types | set(cluster)


def test_every_message_model_is_documented() -> None:
    models = [m for m in vars(protocol).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    types = {m.model_fields["type"].default for m in models if "type" in m.model_fields}
    assert len(types) == 11
    assert all(f"### {t}" in DOC or f"### probe and {t}" in DOC for t in types)


def test_topic_table_matches_topic_names() -> None:
    for kind in ("feed", "fwd", "grad", "report", "ready", "status", "error"):
        name = topic("C", kind, "G")
        assert f"`{name}`" in DOC
        assert parse_topic(name) == ("C", kind, "G")
    assert "`gatemesh/C/control`" in DOC
    assert f"`{topic('C', 'spec', 'G')}` (retained)" in DOC
    assert f"`{host_topic('H')}` (retained)" in DOC
    assert f"`{deployment_topic('D')}` (retained)" in DOC
    assert f"`{part_topic('D', 'I')}` (retained)" in DOC
    assert parse_topic("gatemesh/C/control") == ("C", "control", None)
    assert parse_topic("gatemesh/C/fwd/a/b") is None


def test_transport_error_table_matches_the_exceptions() -> None:
    section = DOC.split("## Transport errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    documented = set(errors.__all__) - {"TransportError"}
    assert set(rows) == documented
    assert all(issubclass(getattr(errors, name), errors.TransportError) for name in documented)
    public = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    assert set(errors.__all__) == public  # __all__ is the module's whole public API


def test_op_table_lists_every_op_with_its_inputs_and_param() -> None:
    """A gate written from the doc alone needs every op: its name, how many inputs, its param."""
    section = DOC.split("### Ops", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d) \| ([^|]+) \|", section, flags=re.MULTILINE)
    assert [(name, int(arity), param.strip() != "null") for name, arity, param in rows] == [
        (op.name, op.arity, op.takes_param) for op in OPS.values()
    ]
