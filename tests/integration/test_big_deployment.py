"""A deployment too large for one message: its record in parts, on two gate host processes.

The 65,000-gate case is measured by hand (`python -m bench.hosts --big`, docs/benchmarks.md);
here a 6,000-gate circuit is recorded in parts of 500 gates, so the record really spans a dozen
messages, read back, run (from the API and from `gatemesh serve`'s session, which shows it as a
summary and progress), undeployed without a trace; and a record with a part missing is named and
still undeployed.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gates.protocol import deployment_topic, topic
from gates.transport import BrokerAddress, connect, publish_all, read_retained
from orchestrator.circuit import Circuit
from orchestrator.cluster import DeploymentRecord, read_cluster
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, find, on_deployment, undeploy
from orchestrator.errors import DeployError
from orchestrator.records import HEAD_INPUTS, head_of, part_topic, with_parts
from orchestrator.reference import evaluate
from tests.processes import GateHostProcess, gatemesh
from web.commands import Run
from web.session import EXPLAIN_LIMIT, Session

pytestmark = pytest.mark.integration

TERMS = 1200
"""tanh(w_i * x_i) terms: 4 gates each, 1,199 adds and a sigmoid make 6,000 gates, 2,400 inputs."""
PART_GATES = 500


def wide(terms: int) -> Circuit:
    lines = [f"t{i} = tanh(w{i} * x{i})" for i in range(terms)]
    lines += [f"s{i} = {'t0' if i == 1 else f's{i - 1}'} + t{i}" for i in range(1, terms)]
    lines.append(f"f = sigmoid(s{terms - 1})")
    return compile_source("\n".join(lines), name="wide")


def inputs_for(circuit: Circuit) -> dict[str, float]:
    return {name: ((i * 37) % 11 - 5) / 7 for i, name in enumerate(circuit.inputs)}


@pytest.fixture(scope="module")
def two_hosts(mosquitto_url: str) -> Iterator[list[str]]:
    tag = secrets.token_hex(3)
    hosts = [GateHostProcess(mosquitto_url, f"big{i}-{tag}") for i in range(2)]
    try:
        for host in hosts:
            host.wait_online()
        yield [host.name for host in hosts]
    finally:
        for host in hosts:
            host.stop()


async def nothing_retained(broker: BrokerAddress, name: str, circuit_id: str) -> dict[str, bytes]:
    """What the deployment still retains, once the hosts have stopped its gates (or after 30 s)."""
    filters = [deployment_topic(name), part_topic(name, "+"), f"gatemesh/{circuit_id}/#"]
    async with asyncio.timeout(30):
        while left := await read_retained(broker, filters):  # noqa: ASYNC110 (the broker's state, polled)
            await asyncio.sleep(0.2)
    return left


async def until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a condition on the session's state, polled)
            await asyncio.sleep(0.05)


async def test_a_record_in_parts_is_deployed_read_run_watched_and_undeployed(
    mosquitto_url: str, two_hosts: list[str]
) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = wide(TERMS)
    assert (len(circuit.gates), len(circuit.inputs)) == (6000, 2400)
    inputs = inputs_for(circuit)
    expected = evaluate(circuit, inputs)
    name = f"wide-{secrets.token_hex(3)}"
    record = await deploy_to_hosts(circuit, name, broker, hosts=two_hosts, timeout=120, part_gates=PART_GATES)
    try:
        assert record.parts == 12
        retained = await read_retained(broker, [deployment_topic(name), part_topic(name, "+")])
        assert set(retained) == {deployment_topic(name), *(part_topic(name, i) for i in range(12))}
        assert max(len(payload) for payload in retained.values()) < 100_000  # 500 gates: ~45 KB

        view = await read_cluster(broker)
        assert view.deployments[name] == record
        found = await find(name, broker)
        assert list(found.placement.items()) == list(record.placement.items())  # the same order too
        assert Counter(found.placement.values()) == dict.fromkeys(two_hosts, 3000)  # round-robin

        async with on_deployment(name, broker, ready_timeout=60) as runner:
            assert await runner.run(inputs, timeout=120) == expected
        await watched_on_the_page(broker, name, circuit, inputs, two_hosts)
    finally:
        head = await undeploy(name, broker)
    assert head is not None
    assert (head.name, head.gates, head.parts, sorted(head.hosts)) == (name, 6000, 12, sorted(two_hosts))
    assert await nothing_retained(broker, name, record.circuit_id) == {}


async def watched_on_the_page(
    broker: BrokerAddress, name: str, circuit: Circuit, inputs: dict[str, float], hosts: list[str]
) -> None:
    """`gatemesh serve`'s session attached to the deployment: a summary, every message counted (none
    told), the result; nothing drawn. One input is given, the others take the page's `fill`."""
    assert len(circuit.gates) > EXPLAIN_LIMIT
    session = Session(broker)
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(session.serve())
        try:
            async with asyncio.timeout(60):
                await session.ready.wait()
            await until(lambda: name in session.cluster.deployments, 30)
            cluster: Any = session.part("cluster")
            listed = next(d for d in cluster["deployments"] if d["name"] == name)
            assert (listed["gates"], listed["input_count"], listed["inputs"]) == (6000, 2400, [])  # > HEAD_INPUTS
            assert HEAD_INPUTS < 2400

            session.start(Run(type="run", deployment=name, inputs={"w0": 2.0}, fill=0.25, timeout=120))
            await until(lambda: session.view.status in ("done", "failed"), 150)
            view = session.view
            assert view.error == ""
            filled = {**dict.fromkeys(circuit.inputs, 0.25), "w0": 2.0}
            assert view.result == evaluate(circuit, filled)
            assert filled != inputs
            summary: Any = view.summary
            assert summary == {
                "gates": 6000,
                "edges": 5999,
                "inputs": 2400,
                "messages": circuit.messages_per_pass(),
                "ops": {"input": 2400, "mul": 1200, "tanh": 1200, "add": 1199, "sigmoid": 1},
                "hosts": dict.fromkeys(sorted(hosts), 3000),
            }

            def progress() -> Any:
                return session.part("progress")["progress"]

            await until(lambda: progress()["crossed"] == 16_800, 10)  # late copies of the last messages count too
            assert progress() == {
                "phases": [
                    {"phase": "feed", "crossed": 2400, "expected": 2400},
                    {"phase": "forward", "crossed": 6000, "expected": 6000},
                    {"phase": "backward", "crossed": 6000, "expected": 6000},
                    {"phase": "report", "crossed": 2400, "expected": 2400},
                ],
                "crossed": 16_800,
                "expected": 16_800,
                "copies": 0,
            }
            assert view.said == 1  # counted, not told
            assert "6,000 gates send 16,800 messages a pass" in view.sentences[0]
            await asyncio.sleep(0.6)  # a drawing turn
            pictures = session.part("pictures")
            assert (pictures["circuit"], pictures["lamport"]) == ("", "")
            assert "6000 gates" in str(pictures["circuit_note"])
        finally:
            serving.cancel()


async def test_a_record_with_a_part_missing_is_named_and_still_undeployed(
    mosquitto_url: str, two_hosts: list[str]
) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = compile_source("q = x + y; f = q * z")
    name = f"torn-{secrets.token_hex(3)}"
    record = await deploy_to_hosts(circuit, name, broker, hosts=two_hosts, part_gates=2)
    assert record.parts == 3
    async with connect(broker) as mqtt:
        await publish_all(mqtt, [(part_topic(name, 1), None)], retain=True)
    view = await read_cluster(broker)
    assert name not in view.deployments
    why = f"deployment {name} ({record.circuit_id}): part 1 of 3 is missing on the broker"
    assert view.unreadable[deployment_topic(name)] == why
    with pytest.raises(DeployError, match=re.escape(f"cannot be read: {why}")):
        await find(name, broker)
    status = await asyncio.to_thread(gatemesh, "status", "--json", "--broker", mosquitto_url)
    assert json.loads(status.stdout)["deployments"][name]["state"] == f"unreadable: {why}"
    head = await undeploy(name, broker)
    assert head is not None
    assert (head.circuit_id, head.gates) == (record.circuit_id, 5)
    assert await nothing_retained(broker, name, record.circuit_id) == {}


async def test_a_head_that_is_no_valid_message_is_listed_and_undeployed_with_its_parts(mosquitto_url: str) -> None:
    """A head that is not even a message: `status` did not list it and `undeploy` refused it
    (only a raw MQTT client could delete it). A head found under another name than its own is
    unreadable too: its name's topics are deleted, not those of the name or circuit it claims
    (another deployment's, perhaps)."""
    broker = BrokerAddress.parse(mosquitto_url)
    junk, claims = f"junk-{secrets.token_hex(3)}", f"claims-{secrets.token_hex(3)}"
    circuit = compile_source("q = x + y; f = q * z")
    async with connect(broker) as mqtt:
        for name, payload in ((deployment_topic(junk), b"{junk"), (part_topic(junk, 0), b"[]")):
            await mqtt.publish(name, payload, qos=1, retain=True)
    status = await asyncio.to_thread(gatemesh, "status", "--json", "--broker", mosquitto_url)
    listed = json.loads(status.stdout)["deployments"][junk]
    assert listed["state"].startswith("unreadable: not a valid message: Invalid JSON")
    named = await asyncio.to_thread(gatemesh, "status", junk, "--broker", mosquitto_url)  # its gates: none to list
    assert named.returncode == 1
    assert named.stderr.startswith(f"error: the record of deployment {junk!r} cannot be read: not a valid message")
    assert named.stderr.endswith(f"; `gatemesh undeploy {junk}` deletes it\n")
    undone = await asyncio.to_thread(gatemesh, "undeploy", junk, "--broker", mosquitto_url)
    assert (undone.returncode, " ".join(undone.stdout.split())) == (
        0,
        f"undeployed {junk}: its record was unreadable; its head and parts are deleted",
    )
    assert await nothing_retained(broker, junk, "none") == {}
    # a broken record (a part missing) retained under `claims`, whose head names another deployment
    placement = dict.fromkeys(circuit.by_id, "h9")
    record = DeploymentRecord(
        name="elsewhere", circuit_id="elsewhere.1", circuit=circuit, placement=placement, hosts={"h9": "0123abcd"}
    )
    left = [
        (deployment_topic(claims), head_of(with_parts(record, 2)).model_dump_json().encode()),  # its parts: none
        (part_topic(claims, 1), b"{}"),
        (topic("elsewhere.1", "spec", "x"), b"{}"),
    ]
    async with connect(broker) as mqtt:
        for name, payload in left:
            await mqtt.publish(name, payload, qos=1, retain=True)
    view = await read_cluster(broker)
    assert view.unreadable[deployment_topic(claims)] == f"its head names deployment 'elsewhere', not {claims!r}"
    said = await asyncio.to_thread(gatemesh, "undeploy", claims, "--broker", mosquitto_url)
    assert (
        " ".join(said.stdout.split())
        == f"undeployed {claims}: its record was unreadable; its head and parts are deleted"
    )
    assert await nothing_retained(broker, claims, "none") == {}
    # what the circuit id its head claims has retained is not this deployment's to delete
    kept = await read_retained(broker, [topic("elsewhere.1", "spec", "+")])
    assert list(kept) == [topic("elsewhere.1", "spec", "x")]
    async with connect(broker) as mqtt:
        await publish_all(mqtt, [(topic("elsewhere.1", "spec", "x"), None)], retain=True)
