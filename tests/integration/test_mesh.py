"""The mesh end to end: gate actors exchanging every value and gradient through a real broker."""

from __future__ import annotations

import asyncio
import random

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings

from gates.actor import GateActor
from gates.host import Connections
from gates.protocol import topic
from gates.transport import BrokerAddress
from orchestrator.api import run_circuit
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.errors import GateFailed, RunTimeout
from orchestrator.examples import STAGED
from orchestrator.reference import evaluate
from orchestrator.runner import open_runner
from tests.strategies import expressions, input_values
from tests.unit.test_reference import NEURON, NEURON_GRADS

pytestmark = pytest.mark.integration


async def test_cs231n_examples_through_the_broker(broker_url: str) -> None:
    r = await run_circuit("x*y", {"x": 4, "y": -3}, broker=broker_url)
    assert (r.value, r.grads) == (-12.0, {"x": -3.0, "y": 4.0})
    r = await run_circuit("(x+y)*z", {"x": -2, "y": 5, "z": -4}, broker=broker_url)
    assert (r.value, r.grads) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})
    r = await run_circuit("max(x, y)", {"x": 4, "y": 2}, broker=broker_url)
    assert (r.value, r.grads) == (4.0, {"x": 1.0, "y": 0.0})
    r = await run_circuit("1/(1+exp(-(w0*x0+w1*x1+w2)))", NEURON, broker=broker_url)
    assert r.value == 0.7310585786300049
    assert r.grads == pytest.approx(NEURON_GRADS, rel=1e-15)
    r = await run_circuit("sigmoid(w0*x0+w1*x1+w2)", NEURON, broker=broker_url)
    assert (r.value, r.grads) == (0.7310585786300049, NEURON_GRADS)
    assert (await run_circuit("(x+x)+(x+x)", {"x": 2}, broker=broker_url)).grads == {"x": 4.0}
    assert (await run_circuit("x*x", {"x": 3}, broker=broker_url)).grads == {"x": 6.0}


async def test_staged_program_matches_reference_exactly(mosquitto_url: str) -> None:
    circuit = compile_source(STAGED)
    result = await run_circuit(circuit, {"x": 3, "y": -4}, broker=mosquitto_url)
    assert result == evaluate(circuit, {"x": 3, "y": -4})


@pytest.mark.parametrize("connections", ["per-gate", "shared"])
async def test_many_runs_in_flight_each_get_their_own_result(broker_url: str, connections: Connections) -> None:
    """x feeds three gates: with a shared connection its topic is subscribed once and routed to each."""
    circuit = compile_source("q = x + y; f = sigmoid(q * z) + x * x")
    rng = random.Random(7)
    cases = [{"x": rng.uniform(-3, 3), "y": rng.uniform(-3, 3), "z": rng.uniform(-3, 3)} for _ in range(200)]
    broker = BrokerAddress.parse(broker_url)
    async with in_process(circuit, broker, connections=connections) as runner, asyncio.TaskGroup() as group:
        tasks = [group.create_task(runner.run(case, timeout=60)) for case in cases]
    for case, task in zip(cases, tasks, strict=True):
        assert task.result() == evaluate(circuit, case)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=expressions(smooth_only=False, max_leaves=8), inputs=input_values())
def test_random_expressions_agree_with_reference(mosquitto_url: str, source: str, inputs: dict[str, float]) -> None:
    circuit = compile_source(source)
    used = {k: v for k, v in inputs.items() if k in circuit.inputs}
    result = asyncio.run(run_circuit(circuit, used, broker=mosquitto_url))
    expected = evaluate(circuit, used)
    assert result.value == pytest.approx(expected.value, rel=1e-12, abs=1e-12)
    assert result.grads == pytest.approx(expected.grads, rel=1e-12, abs=1e-12)


async def test_domain_error_fails_the_run_clearly(broker_url: str) -> None:
    with pytest.raises(GateFailed, match=r"run \w+: gate l failed: output of log\(-1\) is undefined") as caught:
        await run_circuit("l = log(x); f = l * 2", {"x": -1}, broker=broker_url)
    assert caught.value.gate == "l"
    assert caught.value.code == "domain"


async def test_malformed_payloads_do_not_crash_gates(broker_url: str, caplog: pytest.LogCaptureFixture) -> None:
    circuit = compile_source("q = x + y; f = q * z")
    broker = BrokerAddress.parse(broker_url)
    async with in_process(circuit, broker) as runner:
        junk = [b"", b"{", b"[]", b'{"type": "forward"}', b'{"type":"backward","grad":"NaN"}', b"\xff" * 1000]
        errors_seen: list[bytes] = []
        async with aiomqtt.Client(broker.host, broker.port) as spy:
            await spy.subscribe(topic(runner.deployment, "error", "+"), qos=1)
            for gate in ("q", "f", "x"):
                for payload in junk:
                    await spy.publish(topic(runner.deployment, "grad", gate), payload, qos=1)
            await spy.publish(topic(runner.deployment, "fwd", "x"), b'{"oops": 1}', qos=1)
            async with asyncio.timeout(10):
                async for message in spy.messages:
                    errors_seen.append(bytes(message.payload))
                    if len(errors_seen) == 3 * len(junk) + 1:  # only q reads x
                        break
        assert all(b'"code":"bad_' in e for e in errors_seen)
        # the host's log names the topic too (the report does): "gate x: bad_json: ..." said not where
        logged = [r.getMessage() for r in caplog.records if r.name == "gates.actor" and ": bad_" in r.getMessage()]
        assert len(logged) == len(errors_seen)
        assert all(f" on gatemesh/{runner.deployment}/" in said for said in logged), logged
        result = await runner.run({"x": -2, "y": 5, "z": -4})
        assert (result.value, result.grads) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})


async def test_timeout_names_the_gates_it_waits_on(mosquitto_url: str) -> None:
    circuit = compile_source("q = x + y; f = q * z")
    broker = BrokerAddress.parse(mosquitto_url)
    deployment = "partial-" + str(random.getrandbits(32))
    async with open_runner(circuit, deployment, broker) as runner, asyncio.TaskGroup() as group:
        # every gate but z is deployed: z never answers, f waits for it
        actors = [group.create_task(GateActor(s, deployment, broker).serve()) for s in circuit.specs() if s.id != "z"]
        await asyncio.sleep(0.5)
        with pytest.raises(RunTimeout) as caught:
            await runner.run({"x": 1, "y": 2, "z": 3}, timeout=1.0)
        for actor in actors:
            actor.cancel()
    message = str(caught.value)
    assert "did not finish within 1 s" in message
    assert "input(z) did not answer" in message
    assert "mul(f) waits for input(s) z" in message
    assert "add(q) has 0 of 1 gradient(s)" in message
    assert sorted(caught.value.waiting_on) == ["f", "q", "x", "y", "z"]  # nobody finished the backward pass


async def test_circuit_file_runs_like_its_source(tmp_path: object, mosquitto_url: str) -> None:
    circuit = Circuit.from_data(
        {
            "name": "neuron",
            "gates": [
                {"id": "w", "op": "input"},
                {"id": "x", "op": "input"},
                {"id": "b", "op": "const", "param": -1.0},
                {"id": "wx", "op": "mul", "inputs": ["w", "x"]},
                {"id": "s", "op": "add", "inputs": ["wx", "b"]},
                {"id": "f", "op": "tanh", "inputs": ["s"]},
            ],
            "output": "f",
        }
    )
    result = await run_circuit(circuit, {"w": 0.5, "x": 3}, broker=mosquitto_url)
    assert result == evaluate(circuit, {"w": 0.5, "x": 3})
    assert result.grads["w"] == pytest.approx(3 * (1 - result.value**2), rel=1e-15)
