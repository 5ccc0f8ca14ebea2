"""10,000 fuzzed payloads straight into gate logic: no crash, every rejection reported, no state kept."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gates.core import GateCore
from gates.protocol import ORCHESTRATOR, ErrorCode, ErrorReport, Release, topic
from orchestrator.compiler import compile_source
from tests.fuzz import CIRCUIT, SOURCE, FuzzCase, fuzz_cases

PER_EXAMPLE = 10
EXAMPLES = 1000  # 10,000 payloads


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(fuzz_cases(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_gates_survive_every_payload_and_report_each_rejection(cases: list[FuzzCase]) -> None:
    cores = {spec.id: GateCore(spec, CIRCUIT) for spec in compile_source(SOURCE).specs()}
    for case in cases:
        for gate in case.hearers():
            out = cores[gate].handle(case.topic, case.payload)
            errors = [o.message for o in out if isinstance(o.message, ErrorReport)]
            if case.rejected:
                assert len(errors) == 1, (case, out)
                assert errors[0].code in set(ErrorCode)
                assert 0 < len(errors[0].message) <= 600
                assert errors[0].sender == gate
            else:
                assert errors == [], (case, errors)
    for case in cases:
        for run in case.runs:
            release = Release(circuit=CIRCUIT, sender=ORCHESTRATOR, run=run).model_dump_json().encode()
            for core in cores.values():
                core.handle(topic(CIRCUIT, "control"), release)
    assert {gate: core.open_runs for gate, core in cores.items()} == dict.fromkeys(cores, 0)
