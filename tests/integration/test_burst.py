"""A burst of 50,000 QoS 1 messages through the mesh: none is lost."""

from __future__ import annotations

import asyncio
import random

import pytest

from gates.transport import QOS, BrokerAddress, client
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.reference import evaluate

pytestmark = pytest.mark.integration


async def test_fifty_thousand_messages_in_one_burst_lose_none(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = compile_source("q = x + y; f = q * z")
    runs = 50_000 // circuit.messages_per_pass()
    assert runs * circuit.messages_per_pass() == 50_000
    rng = random.Random(50)
    cases = [{name: rng.uniform(-5, 5) for name in circuit.inputs} for _ in range(runs)]
    counted = 0
    async with in_process(circuit, broker) as runner, client(broker) as spy:
        await spy.subscribe(f"gatemesh/{runner.deployment}/+/+", qos=QOS)

        async def count() -> None:
            nonlocal counted
            async for message in spy.messages:
                if "/ready/" not in message.topic.value:
                    counted += 1
                    if counted == 50_000:
                        return

        async with asyncio.TaskGroup() as group:  # every run at once: one burst
            counter = group.create_task(count())
            tasks = [group.create_task(runner.run(case, timeout=300)) for case in cases]
            async with asyncio.timeout(300):
                await counter
    for case, task in zip(cases, tasks, strict=True):
        assert task.result() == evaluate(circuit, case)
    assert counted == 50_000
