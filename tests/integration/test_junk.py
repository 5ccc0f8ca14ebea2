"""Junk on every topic a deploy and a run use changes nothing; a real deletion still stops gates.

On a live deployment on gate host processes, live (not retained) junk is published onto every
topic of every kind in gates/protocol.py, under gatemesh/ and gatemesh-sys/: empty, truncated,
not UTF-8, wrong schema, huge, valid-looking messages for other deployments, forged assignments,
and replays of every message captured from an earlier deployment and from earlier runs. Then the
runs must give the notes' exact numbers, `gatemesh status` must tell the truth, the hosts must
run exactly the deployed gates, and a retained deletion and `gatemesh undeploy` must stop gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from broker.launch import mosquitto
from gates import protocol
from gates.host import GateHost, read_back
from gates.protocol import (
    ORCHESTRATOR,
    Assignment,
    Backward,
    ErrorCode,
    ErrorReport,
    Feed,
    Forward,
    GateSpec,
    GradReport,
    HostPresence,
    Probe,
    Ready,
    Release,
    Status,
    TopicKind,
    deployment_topic,
    host_topic,
    topic,
)
from gates.transport import QOS, SYNC_ROOT, BrokerAddress, client, publish_all, read_retained
from orchestrator.cluster import DeploymentRecord, read_cluster
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, on_deployment, undeploy
from orchestrator.result import RunResult
from tests.integration.test_hosts import start_hosts
from tests.processes import gatemesh
from tests.proxy import relay
from tests.unit.test_reference import NEURON, NEURON_GRADS

pytestmark = pytest.mark.integration

QF = "q = x + y; f = q * z"
QF_INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}
QF_RESULT = RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})
NEURON_SOURCE = "sigmoid(w0*x0 + w1*x1 + w2)"
NEURON_VALUE = 0.7310585786300049
OTHER = "other-deployment.0badc0de"
"""A deployment that never existed: valid-looking messages for it must start nothing."""
SYSTEM_TOPICS = {"host_topic": host_topic, "deployment_topic": deployment_topic}
"""gates/protocol.py's topics outside any circuit (a check below fails if one is added)."""

Publication = tuple[str, bytes]


def test_the_topic_lists_cover_every_kind_in_the_protocol() -> None:
    """A topic kind (or a gatemesh-sys topic) added to gates/protocol.py must be added to the junk too."""
    helpers = {name for name in dir(protocol) if name.endswith("_topic") and name != "parse_topic"}
    assert helpers == set(SYSTEM_TOPICS)
    kinds = {protocol.parse_topic(name)[1] for name in circuit_topics("C", ["g"])}  # type: ignore[index]
    assert kinds == set(typing.get_args(TopicKind))


def circuit_topics(circuit_id: str, gates: list[str]) -> list[str]:
    """Every topic of every kind of a deployment, for each of its gates."""
    found = []
    for kind in typing.get_args(TopicKind):
        found += [topic(circuit_id, "control")] if kind == "control" else [topic(circuit_id, kind, g) for g in gates]
    return found


def system_topics(hosts: list[str], deployments: list[str]) -> list[str]:
    names = {"host_topic": [*hosts, "ghost-host"], "deployment_topic": [*deployments, "ghost"]}
    return [make(name) for helper, make in SYSTEM_TOPICS.items() for name in names[helper]] + [f"{SYNC_ROOT}/junk"]


def junk(circuit_id: str, gate: str) -> list[bytes]:
    """Payloads no component may act on: malformed, or well-formed for another deployment."""
    c, run = OTHER, "junk-run"
    spec = GateSpec(id=gate, index=1, op="input", consumers=1)
    others: list[BaseModel] = [
        Feed(circuit=c, sender=ORCHESTRATOR, run=run, value=1.0),
        Forward(circuit=c, sender=gate, run=run, value=1.0),
        Backward(circuit=c, sender=gate, run=run, port=0, grad=1.0),
        GradReport(circuit=c, sender=gate, run=run, grad=1.0),
        Ready(circuit=c, sender=gate),
        Release(circuit=c, sender=ORCHESTRATOR, run=run),
        Probe(circuit=c, sender=ORCHESTRATOR, run=run),
        Status(circuit=c, sender=gate, run=run, state="finished"),
        ErrorReport(circuit=c, sender=gate, run=run, code=ErrorCode.DOMAIN, message="junk"),
        Assignment(circuit=c, sender=ORCHESTRATOR, host="ghost-host", incarnation="0badc0de", spec=spec),
        HostPresence(host="ghost-host", incarnation="0badc0de", state="offline"),
    ]
    forward = {"type": "forward", "circuit": circuit_id, "sender": gate, "run": run, "value": 1.0}
    # clocks that are not a list of counts by node number, or a Lamport clock before any event
    bad_clocks = [{"lamport": 2, "vc": {gate: 1}}, {"lamport": 2, "vc": [1, -1]}, {"lamport": 0, "vc": [1]}]
    whole_dict = ["compute", 1, 1, {"1": 1}, True, None, None]
    return [
        b"",
        b"\x00",
        b'{"type": "feed", "circuit": "' + circuit_id.encode(),  # truncated
        b"\xff\xfe not utf-8",
        b"null",
        b"[1, 2, 3]",
        b'{"type": "nonsense"}',
        json.dumps({"type": "forward", "circuit": circuit_id, "sender": gate, "run": run, "value": "NaN"}).encode(),
        json.dumps({"type": "ready", "circuit": circuit_id, "sender": gate, "extra": 1}).encode(),
        *(json.dumps({**forward, "clock": clock}).encode() for clock in bad_clocks),
        json.dumps(  # a trace batch whose first clock is said to be whole but is not a list
            {"type": "trace", "circuit": circuit_id, "sender": gate, "run": run, "host": "h", "events": [whole_dict]}
        ).encode(),
        *(message.model_dump_json().encode() for message in others),
    ]


def huge(circuit_id: str) -> bytes:
    """Just under Mosquitto's max_packet_size in broker/mosquitto.conf (2,000,000)."""
    return json.dumps({"type": "feed", "circuit": circuit_id, "pad": "x" * 1_500_000}).encode()


def forged_assignments(record: DeploymentRecord, incarnations: dict[str, str]) -> list[Publication]:
    """Live, valid-looking assignments of this deployment's gates that differ from the retained ones."""
    forged: list[Publication] = []
    for spec in record.circuit.specs():
        where = topic(record.circuit_id, "spec", spec.id)
        host = record.placement[spec.id]
        elsewhere = next(h for h in incarnations if h != host)
        changed = spec.model_copy(update={"consumers": spec.consumers + 1})
        for assigned_host, incarnation, gate_spec in [
            (host, incarnations[host], changed),  # another spec, on the right host
            (elsewhere, incarnations[elsewhere], spec),  # moved to the other host
            (host, "0badc0de", spec),  # to an incarnation that does not exist
        ]:
            forged.append(
                (
                    where,
                    Assignment(
                        circuit=record.circuit_id,
                        sender=ORCHESTRATOR,
                        host=assigned_host,
                        incarnation=incarnation,
                        spec=gate_spec,
                    )
                    .model_dump_json()
                    .encode(),
                )
            )
        # a gate of a deployment that does not exist, assigned to the very host process that runs this one
        ghost = Assignment(circuit=OTHER, sender=ORCHESTRATOR, host=host, incarnation=incarnations[host], spec=spec)
        forged.append((topic(OTHER, "spec", spec.id), ghost.model_dump_json().encode()))
    return forged


@contextlib.asynccontextmanager
async def recording(broker: BrokerAddress) -> AsyncIterator[list[Publication]]:
    """Every live message under gatemesh/ and gatemesh-sys/ while the block runs (to replay later)."""
    seen: list[Publication] = []
    async with client(broker) as mqtt:
        await mqtt.subscribe([("gatemesh/#", QOS), ("gatemesh-sys/#", QOS)])

        async def listen() -> None:
            async for message in mqtt.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if not message.retain and not message.topic.value.startswith(SYNC_ROOT):
                    seen.append((message.topic.value, payload))

        async with asyncio.TaskGroup() as group:
            listener = group.create_task(listen())
            try:
                yield seen
            finally:
                await asyncio.sleep(0.3)  # the last messages of the block arrive
                listener.cancel()


async def answering(broker: BrokerAddress, circuit_id: str, seconds: float = 0.5) -> set[str]:
    """The gates of `circuit_id` that answer a Probe: the gates that run, wherever they run."""
    found: set[str] = set()
    async with client(broker) as mqtt:
        await mqtt.subscribe(topic(circuit_id, "status", "+"), qos=QOS)
        probe = Probe(circuit=circuit_id, sender=ORCHESTRATOR, run=f"probe-{secrets.token_hex(4)}")
        await publish_all(mqtt, [(topic(circuit_id, "control"), probe)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in mqtt.messages:
                    if message.retain or not isinstance(message.payload, bytes):
                        continue
                    answer = Status.model_validate_json(message.payload)
                    if answer.run == probe.run:
                        found.add(answer.sender)
    return found


async def until_none_answer(broker: BrokerAddress, circuit_id: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while left := await answering(broker, circuit_id):
            print(f"still running in {circuit_id}: {sorted(left)}")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a condition on another task's state, polled)
            await asyncio.sleep(0.05)


async def publish_raw(broker: BrokerAddress, batch: list[Publication]) -> None:
    async with client(broker) as mqtt:
        for start in range(0, len(batch), 200):
            async with asyncio.TaskGroup() as group:
                for name, payload in batch[start : start + 200]:
                    group.create_task(mqtt.publish(name, payload, qos=QOS))


def status(url: str) -> dict[str, Any]:
    done = gatemesh("status", "--json", "--broker", url)
    assert done.returncode == 0, done.stderr
    state: dict[str, Any] = json.loads(done.stdout)
    return state


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    """A broker of its own, so that `gatemesh status` must list exactly this test's hosts and deployments."""
    with mosquitto() as url:
        yield url


async def test_junk_on_every_topic_changes_nothing_and_undeploy_still_stops_every_gate(own_broker: str) -> None:
    url, broker = own_broker, BrokerAddress.parse(own_broker)
    hosts = await asyncio.to_thread(start_hosts, url, "junk", 2)  # one shared connection, one per gate
    names = [h.name for h in hosts]
    try:
        # An earlier deployment and earlier runs, recorded: every message they sent is replayed later.
        async with recording(broker) as replays:
            old = await deploy_to_hosts(compile_source(QF), "old", broker, hosts=names)
            async with on_deployment("old", broker) as runner:
                assert await runner.run(QF_INPUTS) == QF_RESULT
            await undeploy("old", broker)
            await until_none_answer(broker, old.circuit_id)
            qf = await deploy_to_hosts(compile_source(QF), "qf", broker, hosts=names)
            neuron = await deploy_to_hosts(compile_source(NEURON_SOURCE), "neuron", broker, hosts=names)
            async with on_deployment("qf", broker) as runner:
                assert await runner.run(QF_INPUTS) == QF_RESULT
        assert {name.split("/")[1] for name, _ in replays} >= {old.circuit_id, qf.circuit_id, neuron.circuit_id}

        incarnations = {h: p.incarnation for h, p in (await read_cluster(broker)).hosts.items()}
        barrage = list(replays)  # first: a replayed assignment must not undo what junk after it did
        for record in (old, qf, neuron):
            gates = list(record.placement)
            for name in circuit_topics(record.circuit_id, gates):
                barrage += [(name, payload) for payload in junk(record.circuit_id, name.rsplit("/", 1)[-1])]
            big = huge(record.circuit_id)
            barrage += [(topic(record.circuit_id, kind, gates[0]), big) for kind in ("feed", "spec")]
            barrage += forged_assignments(record, incarnations)
        for name in system_topics(names, ["old", "qf", "neuron"]):
            barrage += [(name, payload) for payload in junk("ghost", "ghost")]
        kinds = {protocol.parse_topic(name)[1] for name, _ in barrage if protocol.parse_topic(name)}  # type: ignore[index]
        assert kinds == set(typing.get_args(TopicKind))

        # A runner that is open while the junk arrives, and one opened afterwards.
        async with on_deployment("qf", broker) as during, on_deployment("neuron", broker) as neuron_runner:
            await publish_raw(broker, barrage)
            await asyncio.sleep(1.0)  # whatever the junk could make a host do, it has done by now
            for _ in range(3):
                assert await during.run(QF_INPUTS) == QF_RESULT
                result = await neuron_runner.run(NEURON)
                assert (result.value, result.grads) == (NEURON_VALUE, NEURON_GRADS)
        print(f"published {len(barrage)} junk messages ({len(replays)} replays); runs exact afterwards")

        # A new orchestrator computes the same; the hosts run exactly the deployed gates; `gatemesh status` says so.
        qf_args = ["run", "--deployed", "qf", "x=-2", "y=5", "z=-4", "--json", "--broker", url]
        clis = asyncio.gather(asyncio.to_thread(gatemesh, *qf_args), asyncio.to_thread(status, url))
        circuits = [qf.circuit_id, neuron.circuit_id, old.circuit_id, OTHER]
        (done, state), running = await asyncio.gather(clis, asyncio.gather(*(answering(broker, c) for c in circuits)))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"value": -12.0, "grads": {"x": -4.0, "y": -4.0, "z": 3.0}}
        assert running == [set(qf.placement), set(neuron.placement), set(), set()]
        assert await read_retained(broker, [f"gatemesh/{old.circuit_id}/#", f"gatemesh/{OTHER}/#"]) == {}
        assert {h: v["state"] for h, v in state["hosts"].items()} == dict.fromkeys(names, "online")
        assert {d: v["state"] for d, v in state["deployments"].items()} == {"qf": "ready", "neuron": "ready"}
        for deployment in ("qf", "neuron"):
            assert {v["state"] for v in state["deployments"][deployment]["gates"].values()} == {"ready"}

        # A real deletion (an empty retained assignment) stops its gate; `gatemesh undeploy` stops every gate.
        async with client(broker) as mqtt:
            await publish_all(mqtt, [(topic(qf.circuit_id, "spec", "q"), None)], retain=True)
        async with asyncio.timeout(10):
            while (running_qf := await answering(broker, qf.circuit_id)) != set(qf.placement) - {"q"}:
                print(f"running in {qf.circuit_id}: {sorted(running_qf)}")
        gates = (await asyncio.to_thread(status, url))["deployments"]["qf"]["gates"]
        assert {g: v["state"] for g, v in gates.items()} == {**dict.fromkeys("xyzf", "ready"), "q": "not ready"}
        undeploys = [asyncio.to_thread(gatemesh, "undeploy", name, "--broker", url) for name in ("qf", "neuron")]
        for done in await asyncio.gather(*undeploys):
            assert done.returncode == 0, done.stderr
        await asyncio.gather(until_none_answer(broker, qf.circuit_id), until_none_answer(broker, neuron.circuit_id))
        assert await read_retained(broker, ["gatemesh/#"]) == {}
        state = await asyncio.to_thread(status, url)
        assert (state["deployments"], {h: v["state"] for h, v in state["hosts"].items()}) == (
            {},
            dict.fromkeys(names, "online"),
        )
    finally:
        for host in hosts:
            host.stop()


async def test_an_assignment_deleted_while_a_host_was_cut_off_stops_its_gate(own_broker: str) -> None:
    """No notice reaches a host that is away; on reconnecting it reads back the assignments of its gates."""
    broker = BrokerAddress.parse(own_broker)
    async with relay(broker.host, broker.port) as link:
        host = GateHost(f"cut-{secrets.token_hex(3)}", BrokerAddress(host="127.0.0.1", port=link.port))
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(host.serve())
            try:
                record = await deploy_to_hosts(compile_source(QF), "cut", broker, hosts=[host.name], timeout=10)
                assert host.gates == sorted((record.circuit_id, g) for g in record.placement)
                link.silent = True  # the host hears nothing, and nobody notices for a while
                async with client(broker) as mqtt:
                    await publish_all(mqtt, [(topic(record.circuit_id, "spec", "q"), None)], retain=True)
                await asyncio.sleep(0.2)
                assert (record.circuit_id, "q") in host.gates  # the notice did not get through
                link.silent = False
                link.cut()  # the host reconnects, and gets no message about q: it has none retained
                await until(lambda: (record.circuit_id, "q") not in host.gates)
                assert host.gates == sorted((record.circuit_id, g) for g in "xyzf")
                await undeploy("cut", broker)
                await until(lambda: not host.gates)
            finally:
                serving.cancel()


async def test_a_broken_assignment_to_a_host_is_reported_on_its_gates_error_topic(
    own_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An assignment that names this host and its incarnation but is not a valid one (a negative
    consumer count): the host ignored it without a word, and its deployer waited for a Ready
    until its timeout. One it cannot obey (an unknown op) was reported, and not logged."""
    broker = BrokerAddress.parse(own_broker)
    host = GateHost(f"told-{secrets.token_hex(3)}", broker)
    circuit = f"told.{secrets.token_hex(3)}"
    spec = GateSpec(id="g", index=1, op="neg", inputs=("x",), consumers=1)
    assignment = Assignment(
        circuit=circuit, sender=ORCHESTRATOR, host=host.name, incarnation=host.incarnation, spec=spec
    )
    broken = json.loads(assignment.model_dump_json())
    broken["spec"]["consumers"] = -1
    unknown = json.loads(assignment.model_dump_json())
    unknown["spec"]["op"] = "nope"
    heard: list[ErrorReport] = []
    async with asyncio.TaskGroup() as group, client(broker) as mqtt:
        serving = group.create_task(host.serve())
        try:
            await mqtt.subscribe(topic(circuit, "error", "+"))
            async with asyncio.timeout(10):
                while await read_retained(broker, [host_topic(host.name)]) == {}:  # noqa: ASYNC110 (online: the broker's state, polled)
                    await asyncio.sleep(0.05)
            for gate, payload in (("g", broken), ("h", {**unknown, "spec": {**unknown["spec"], "id": "h"}})):
                await mqtt.publish(topic(circuit, "spec", gate), json.dumps(payload), qos=1, retain=True)
            async with asyncio.timeout(10):
                async for message in mqtt.messages:
                    heard.append(ErrorReport.model_validate_json(bytes(message.payload)))
                    if len(heard) == 2:
                        break
            assert host.gates == []
            await publish_all(mqtt, [(topic(circuit, "spec", gate), None) for gate in "gh"], retain=True)
        finally:
            serving.cancel()
    said = {report.topic: (report.code, report.sender, report.message) for report in heard}
    assert said[topic(circuit, "spec", "g")] == (
        ErrorCode.BAD_SCHEMA,
        host.name,
        "not a valid assignment: assign.spec.consumers: Input should be greater than or equal to 0",
    )
    assert said[topic(circuit, "spec", "h")][0] == ErrorCode.BAD_SCHEMA
    assert "nope" in said[topic(circuit, "spec", "h")][2]
    logged = [r.getMessage() for r in caplog.records if "cannot run gate" in r.getMessage()]
    assert len(logged) == 2, logged


async def test_reading_back_hears_only_what_is_retained(broker_url: str) -> None:
    """Live junk published to a topic while it is read back is not taken for the topic's retained message."""
    broker = BrokerAddress.parse(broker_url)
    held, deleted = (topic(f"read-back-{secrets.token_hex(3)}", "spec", gate) for gate in ("a", "b"))
    assignment = b'{"retained": true}'
    async with client(broker) as mqtt:
        await mqtt.publish(held, assignment, qos=QOS, retain=True)
        flooding = True

        async def flood() -> None:
            while flooding:
                for name in (held, deleted):
                    for junk_payload in (b"", b"live junk"):
                        await mqtt.publish(name, junk_payload, qos=0)
                # four junk messages a millisecond: always some while a read is under way, and the
                # embedded broker (one Python thread) still answers the reader's SUBSCRIBE in time
                await asyncio.sleep(0.001)

        async with asyncio.TaskGroup() as group:
            group.create_task(flood())
            try:
                for _ in range(10):
                    assert await read_back(broker, [held, deleted]) == {held: assignment}
                    assert await read_retained(broker, [held, deleted]) == {held: assignment}
            finally:
                flooding = False
        await mqtt.publish(held, b"", qos=QOS, retain=True)
