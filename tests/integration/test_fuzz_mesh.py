"""10,000 fuzzed payloads through a real Mosquitto into live gate actors.

No gate crashes or keeps state, every rejection is reported on the error topic with a
reason (exactly one report per gate that heard a bad payload), and runs afterwards are correct.
"""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from broker.launch import mosquitto
from gates.actor import GateActor
from gates.lifecycle import cancel_and_wait
from gates.protocol import ORCHESTRATOR, ErrorCode, ErrorReport, Probe, Release, topic
from gates.transport import QOS, BrokerAddress, client, publish_all
from orchestrator.compiler import compile_source
from orchestrator.reference import evaluate
from orchestrator.runner import open_runner
from tests.fuzz import CIRCUIT, SOURCE, random_cases

pytestmark = pytest.mark.integration

PAYLOADS = 10_000


async def test_ten_thousand_fuzzed_payloads_through_the_broker() -> None:
    cases = random_cases(PAYLOADS, seed=20261127)
    expected = sum(len(case.hearers()) for case in cases if case.rejected)
    assert sum(case.rejected for case in cases) > PAYLOADS // 2
    circuit = compile_source(SOURCE)
    with mosquitto() as url:  # a broker of its own: the fuzz uses the fixed circuit id "circuit"
        broker = BrokerAddress.parse(url)
        actors = [GateActor(spec, CIRCUIT, broker) for spec in circuit.specs()]
        reports: list[ErrorReport] = []
        async with open_runner(circuit, CIRCUIT, broker) as runner, client(broker) as spy:
            await spy.subscribe(topic(CIRCUIT, "error", "+"), qos=QOS)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(actor.serve()) for actor in actors]
                await runner.wait_ready(10)

                async def collect() -> None:
                    async for message in spy.messages:
                        reports.append(ErrorReport.model_validate_json(_payload(message)))
                        if len(reports) == expected:
                            return

                collector = group.create_task(collect())
                async with client(broker) as fuzzer:
                    for start in range(0, PAYLOADS, 200):
                        async with asyncio.TaskGroup() as sends:
                            for case in cases[start : start + 200]:
                                sends.create_task(fuzzer.publish(case.topic, case.payload, qos=QOS))
                    async with asyncio.timeout(120):
                        await collector
                    runs = [run for case in cases for run in case.runs]
                    control = topic(CIRCUIT, "control")
                    releases = [(control, Release(circuit=CIRCUIT, sender=ORCHESTRATOR, run=r)) for r in runs]
                    await publish_all(fuzzer, releases)
                    await _every_gate_has_caught_up(fuzzer, spy, len(actors), reports)
                alive = [not task.done() for task in tasks]
                open_runs = {actor.core.spec.id: actor.core.open_runs for actor in actors}
                results = [await runner.run({"x": x, "y": 2.0, "z": -3.0}) for x in range(-10, 10)]
                await cancel_and_wait(tasks)
    assert all(alive)
    assert len(reports) == expected
    assert all(r.code in set(ErrorCode) and r.message for r in reports)
    only_elsewhere = {ErrorCode.DOMAIN, ErrorCode.EVICTED, ErrorCode.WRONG_STEP}  # wrong_step: parameters only
    assert {r.code for r in reports} == set(ErrorCode) - only_elsewhere
    assert open_runs == dict.fromkeys(open_runs, 0)
    for x, result in zip(range(-10, 10), results, strict=True):
        assert result == evaluate(circuit, {"x": x, "y": 2.0, "z": -3.0})
    print(json.dumps({"payloads": PAYLOADS, "error_reports": len(reports)}))


async def _every_gate_has_caught_up(
    fuzzer: aiomqtt.Client, spy: aiomqtt.Client, gates: int, reports: list[ErrorReport]
) -> None:
    """Probe a marker run after everything else: a gate answers only once it has handled all before it.

    Error reports that arrive meanwhile are added to `reports`: any beyond the expected count shows.
    """
    await spy.subscribe(topic(CIRCUIT, "status", "+"), qos=QOS)
    await publish_all(fuzzer, [(topic(CIRCUIT, "control"), Probe(circuit=CIRCUIT, sender=ORCHESTRATOR, run="barrier"))])
    answered: set[str] = set()
    async with asyncio.timeout(120):
        async for message in spy.messages:
            if message.topic.value.startswith(topic(CIRCUIT, "error", "")):
                reports.append(ErrorReport.model_validate_json(_payload(message)))
            elif message.topic.value.startswith(topic(CIRCUIT, "status", "")):
                answered.add(message.topic.value)
                if len(answered) == gates:
                    return


def _payload(message: aiomqtt.Message) -> bytes:
    return message.payload if isinstance(message.payload, bytes) else b""
