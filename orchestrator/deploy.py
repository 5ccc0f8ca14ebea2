"""Putting a circuit's gates somewhere: actors in this process, or gate hosts on the broker.

Either way the gates share nothing but the broker: every value and gradient crosses it.

On hosts, a deployment is a set of retained messages: one Assignment per gate on
gatemesh/<circuit id>/spec/<gate>, naming the host (and the host's incarnation) that must run
it, then, once every gate has said Ready, the deployment's record: its parts on
gatemesh-sys/deployments/<name>/part/<i>, then its head on gatemesh-sys/deployments/<name>
(orchestrator/records.py). Undeploying deletes them all. Each deployment gets a fresh
circuit id, so gates of an earlier deployment under the same name can never hear its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence

from pydantic import BaseModel, ValidationError

from broker.security import GateGrant, SecureDir
from gates.actor import GateActor
from gates.errors import TransportError, UnsupportedBroker
from gates.faults import Faults
from gates.host import Connections
from gates.lifecycle import cancel_and_wait, despite_cancellation
from gates.mqtt311 import Session
from gates.mux import SharedConnection
from gates.protocol import ORCHESTRATOR, Assignment, HostPresence, deployment_topic, topic
from gates.transport import BrokerAddress, check_retained_reads, encode, read_retained
from orchestrator.circuit import Circuit
from orchestrator.cluster import DEPLOYMENT_NAME_PATTERN, ClusterView, DeploymentRecord, read_cluster
from orchestrator.errors import BrokerError, DeployError, GatesNotReady, broker_failed
from orchestrator.placement import place
from orchestrator.recorder import Recorder
from orchestrator.records import (
    PART_GATES,
    RETAINED_RECORD,
    DeploymentHead,
    head_of,
    part_topic,
    retained_messages,
    retained_topics,
    with_parts,
)
from orchestrator.runner import RecordWatch, Runner, open_runner

HostChoice = int | Sequence[str] | None
"""Which hosts to deploy on: all that are online (None), a number of them, or these names."""
HOST_POLL = 0.25
UNDEPLOY_SECONDS = 10.0
"""How long taking a run's own deployment back may take, after the run (or a Ctrl-C)."""
START_WAVE = 2000
"""Gates started at once by `in_process` (see there)."""
ACL_RELOAD = 0.5
"""Seconds given to the broker to reload a rewritten ACL (`python -m broker mosquitto --secure`
looks every 50 ms) before gates that need it are assigned; Mosquitto drops a client that
publishes where the ACL in force forbids, and the gate would have to reconnect."""


def deployment_id(circuit: Circuit) -> str:
    """A deployment id unique enough to share a broker with any other deployment."""
    return f"{circuit.name[:40]}-{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def in_process(
    circuit: Circuit,
    broker: BrokerAddress,
    *,
    ready_timeout: float = 30.0,
    faults: Faults | None = None,
    connections: Connections = "per-gate",
    recorder: Recorder | None = None,
) -> AsyncIterator[Runner]:
    """Start one actor per gate, wait until all are ready, yield a Runner; stop them on exit.

    Each gate has its own connection, or with connections="shared" all share one. Gates start
    in waves of START_WAVE, each ready before the next starts: the short-lived objects of one
    wave's start-up (subscription waits, Ready messages) are then reused by the next instead
    of being left as holes between long-lived gates (at 65,000 gates, ~1 KB per gate of RSS).
    """
    deployment = deployment_id(circuit)
    opened = open_runner(circuit, deployment, broker, recorder=recorder)
    async with opened as runner, asyncio.TaskGroup() as group:
        shared = SharedConnection(broker) if connections == "shared" else None
        link = shared.link if shared is not None else broker
        actors = [group.create_task(shared.serve())] if shared is not None else []
        deadline = asyncio.get_running_loop().time() + ready_timeout
        try:
            for start in range(0, len(circuit.gates), START_WAVE):
                wave = circuit.gates[start : start + START_WAVE]
                actors += [
                    group.create_task(GateActor(circuit.spec(g), deployment, link, faults=faults).serve_forever())
                    for g in wave
                ]
                left = deadline - asyncio.get_running_loop().time()
                await runner.wait_ready(max(left, 0.0), [g.id for g in wave])
            yield runner
        finally:
            await cancel_and_wait(actors)


# -- on gate hosts ------------------------------------------------------------------------


async def wait_for_hosts(
    broker: BrokerAddress, wanted: HostChoice, timeout: float, waiting: Callable[[str], None] | None = None
) -> list[str]:
    """The names of the hosts to deploy on, once they are online (waiting up to `timeout`).
    `waiting` is told once, if they are not online at first: a wait of 30 s in silence reads as a hang."""
    view = ClusterView()
    try:
        async with asyncio.timeout(timeout):
            while True:
                view = await _read(broker, ())
                chosen = _choose(view.online, wanted)
                if chosen is not None:
                    return chosen
                if waiting is not None:
                    want = ", ".join(wanted) if isinstance(wanted, Sequence) else f"{wanted or 1} gate host(s)"
                    waiting(f"waiting up to {timeout:g} s for {want} (online now: {', '.join(view.online) or 'none'})")
                    waiting = None
                await asyncio.sleep(HOST_POLL)
    except TimeoutError:
        online = ", ".join(view.online) or "none"
        if isinstance(wanted, Sequence):  # named hosts: say which are missing, and how each stands
            missing = [h for h in wanted if h not in view.online]
            stands = [f"{h} ({_standing(view.hosts.get(h))})" for h in missing]
            raise DeployError(
                f"waited {timeout:g} s for the hosts {', '.join(wanted)} on {broker}; not online: "
                f"{', '.join(stands)}; online: {online}. Start one with "
                f"`gatemesh host --name {missing[0]} --broker {broker}`"
            ) from None
        want = "a gate host" if wanted is None else f"{wanted} gate host(s)"
        raise DeployError(
            f"waited {timeout:g} s for {want} on {broker}; online: {online}. "
            f"Start hosts with `gatemesh host --broker {broker}`"
        ) from None


def _standing(presence: HostPresence | None) -> str:
    """How a host that is not online stands, as the broker has it."""
    if presence is None:
        return "never seen on this broker"
    return f"offline: {presence.reason}" if presence.reason else "offline"


def _choose(online: list[str], wanted: HostChoice) -> list[str] | None:
    if wanted is None:
        return online or None
    if isinstance(wanted, int):
        return online[:wanted] if len(online) >= wanted else None
    return list(wanted) if set(wanted) <= set(online) else None


async def deploy_to_hosts(
    circuit: Circuit,
    name: str,
    broker: BrokerAddress,
    *,
    hosts: HostChoice = None,
    placement: str = "round-robin",
    timeout: float = 30.0,
    secure: SecureDir | None = None,
    part_gates: int = PART_GATES,
    replacing: Callable[[DeploymentRecord], None] | None = None,
    waiting: Callable[[str], None] | None = None,
    transient: bool = False,
) -> DeploymentRecord:
    """Place the gates on live hosts, wait until every gate is ready, record the deployment.

    `replacing` is told of a deployment of the same name before it is taken down, `waiting` of a
    wait for hosts not online yet; `transient`: made for one run (DeploymentRecord.transient).

    A deployment of the same name is replaced. If the gates are not all ready within
    `timeout`, or a host is lost meanwhile, everything published is deleted again. With
    `secure`, the broker's ACL is rewritten first so that each host may touch only the topics
    of its own gates (the broker must reload it: `python -m broker mosquitto --secure` does).
    The record is retained in parts of `part_gates` gates (orchestrator/records.py).
    """
    if not re.match(DEPLOYMENT_NAME_PATTERN, name):
        raise DeployError(
            f"deployment name {name!r}: up to 100 letters, digits, '_' or '-', starting with a letter or '_'"
        )
    names = await wait_for_hosts(broker, hosts, timeout, waiting)
    view = await _read(broker, None if secure is not None else [name])  # the ACL needs every deployment
    placed = place(circuit, names, placement)
    mapping = {g.id: placed[g.id] for g in circuit.gates}  # in circuit order, as its record's parts hold it
    used = sorted(set(mapping.values()), key=names.index)
    record = DeploymentRecord(
        name=name,
        circuit_id=f"{name}.{secrets.token_hex(4)}",
        circuit=circuit,
        placement=mapping,
        hosts={h: view.hosts[h].incarnation for h in used},
        transient=transient,
    )
    record = with_parts(record, part_gates)
    old = view.deployments.get(name)
    if name in view.broken:
        await _delete_found(broker, name, view.broken[name].circuit_id)
    elif _head_unreadable(view, name):
        await _delete_found(broker, name, None)
    if secure is not None:  # the ACL must let the new gates in before they are assigned
        others = [d for d in view.deployments.values() if d.name != name]
        secure.write_acl([grant for d in [*others, record] for grant in grants(d)])
        await asyncio.sleep(ACL_RELOAD)
    async with open_runner(circuit, record.circuit_id, broker, hosts=record.hosts, placement=mapping) as runner:
        send = functools.partial(runner.publish, retain=True, confirm=True)
        if old is not None:
            if replacing is not None:
                replacing(old)
            await _delete(send, old)
        try:
            await send(_assignments(record))
            try:
                await runner.wait_ready(timeout)
            except GatesNotReady as exc:  # taken back below
                replaced = f" (the deployment it was to replace, {old.circuit_id}, is gone too)" if old else ""
                raise DeployError(
                    f"{exc}; nothing of deployment {name} is left on the hosts{replaced}; a host whose gates do not "
                    "answer may be hung or overloaded: `gatemesh status` lists the hosts and how each stands"
                ) from exc
            messages = retained_messages(record)
            await send(messages[:-1])  # the parts, acknowledged before the head that points to them
            await send(messages[-1:])
        except BaseException:
            with contextlib.suppress(TransportError):
                await _delete(send, record)
            raise
    return record


async def undeploy(name: str, broker: BrokerAddress, *, secure: SecureDir | None = None) -> DeploymentHead | None:
    """Delete a deployment's retained messages; its hosts stop its gates when they see that.

    A deployment whose record cannot be assembled (a part is missing) is deleted too: whatever
    its name and its head's circuit id have retained. So is one whose head is not even a valid
    message: its head and its parts (None: no record says what its gates were).
    """
    view = await _read(broker, None if secure is not None else [name])
    head: DeploymentHead | None
    if name in view.broken:
        head = view.broken[name]
        await _delete_found(broker, name, head.circuit_id)
    elif _head_unreadable(view, name):
        head = None
        await _delete_found(broker, name, None)
    else:
        record = _record(view, name, broker)
        head = head_of(record)
        async with _retainer(broker) as send:
            await _delete(send, record)
    if secure is not None:
        secure.write_acl([grant for d in view.deployments.values() if d.name != name for grant in grants(d)])
    return head


def grants(record: DeploymentRecord) -> list[GateGrant]:
    """What the ACL must allow for a deployment: each gate, where it runs, what it reads."""
    return [
        GateGrant(record.circuit_id, g.id, record.placement[g.id], g.inputs, leaf=not g.inputs)
        for g in record.circuit.gates
    ]


async def find(name: str, broker: BrokerAddress) -> DeploymentRecord:
    return _record(await _read(broker, [name]), name, broker)


def _record(view: ClusterView, name: str, broker: BrokerAddress) -> DeploymentRecord:
    record = view.deployments.get(name)
    why = view.unreadable.get(deployment_topic(name))
    if record is None and why is not None:
        raise DeployError(f"the record of deployment {name!r} on {broker} cannot be read: {why}")
    if record is None:
        known = ", ".join(sorted(view.heads)) or "none"  # every head is read; only `name`'s parts were
        raise DeployError(f"no deployment named {name!r} on {broker} (deployments: {known})")
    return record


def _watch(name: str, circuit_id: str, broker: BrokerAddress) -> RecordWatch:
    """How a runner on deployment `name` tells that it was undeployed or replaced meanwhile."""

    async def check() -> str:
        try:
            await check_retained_reads(broker)  # checked by on_deployment already: once per broker and process
            retained = await read_retained(broker, [deployment_topic(name)])  # the head alone
        except TransportError as exc:
            raise broker_failed(broker, exc, f"cannot read deployment {name}'s record") from exc
        payload = retained.get(deployment_topic(name))
        if payload is None:
            return "was undeployed (or is being replaced: a replacement deletes the old record first)"
        try:
            found = RETAINED_RECORD.validate_json(payload).circuit_id
        except ValidationError:
            return ""  # something unreadable is retained there: not a reason to fail a run
        return "" if found == circuit_id else f"was replaced by another deployment of its name ({found})"

    return RecordWatch(name, check)


@contextlib.asynccontextmanager
async def on_deployment(
    name: str,
    broker: BrokerAddress,
    *,
    ready_timeout: float = 10.0,
    recorder: Recorder | None = None,
) -> AsyncIterator[Runner]:
    """A Runner for a deployment that lives on gate hosts (made by `deploy_to_hosts`)."""
    view = await _read(broker, [name])
    record = _record(view, name, broker)
    async with open_runner(
        record.circuit,
        record.circuit_id,
        broker,
        hosts=record.hosts,
        placement=record.placement,
        recorder=recorder,
        record_watch=_watch(name, record.circuit_id, broker),
    ) as runner:
        runner.lost.update(view.lost_hosts(record))
        await runner.wait_ready(ready_timeout)
        yield runner


@contextlib.asynccontextmanager
async def on_hosts(
    circuit: Circuit,
    broker: BrokerAddress,
    *,
    hosts: HostChoice = None,
    placement: str = "round-robin",
    timeout: float = 30.0,
    recorder: Recorder | None = None,
    secure: SecureDir | None = None,
    waiting: Callable[[str], None] | None = None,
) -> AsyncIterator[Runner]:
    """A deployment on gate hosts for the duration of the block (what `gatemesh run --hosts` uses).
    With `secure`, the ACL is rewritten for it, and again once it is gone (see deploy_to_hosts)."""
    name = f"run-{re.sub(r'[^A-Za-z0-9_-]', '-', circuit.name[:40])}-{secrets.token_hex(4)}"
    try:  # a Ctrl-C as the deploy ends (its record written) must take it back too
        await deploy_to_hosts(
            circuit,
            name,
            broker,
            hosts=hosts,
            placement=placement,
            timeout=timeout,
            secure=secure,
            waiting=waiting,
            transient=True,
        )
        async with on_deployment(name, broker, ready_timeout=timeout, recorder=recorder) as runner:
            yield runner
    finally:  # after a failure, and after a Ctrl-C too: a deployment made for one run must not outlive it
        with contextlib.suppress(DeployError, BrokerError, TimeoutError):
            await despite_cancellation(lambda: undeploy(name, broker, secure=secure), UNDEPLOY_SECONDS)


def _assignments(record: DeploymentRecord) -> list[tuple[str, BaseModel | None]]:
    specs = {spec.id: spec for spec in record.circuit.specs()}
    return [
        (
            topic(record.circuit_id, "spec", gate),
            Assignment(
                circuit=record.circuit_id,
                sender=ORCHESTRATOR,
                host=host,
                incarnation=record.hosts[host],
                spec=specs[gate],
            ),
        )
        for gate, host in record.placement.items()
    ]


Send = Callable[[list[tuple[str, BaseModel | None]]], Awaitable[None]]
"""Publishes a batch of retained messages and returns once the broker has them all."""


async def _delete(send: Send, record: DeploymentRecord) -> None:
    """Delete the record first, its head before its parts (no one starts new runs), then the
    assignments, then the Readies."""
    topics = retained_topics(record)
    await send([(topics[0], None)])
    await send([(name, None) for name in topics[1:]])
    await send([(topic(record.circuit_id, "spec", gate), None) for gate in record.placement])
    await send([(topic(record.circuit_id, "ready", gate), None) for gate in record.placement])


def _head_unreadable(view: ClusterView, name: str) -> bool:
    """Whether deployment `name`'s head is retained but is not a valid message."""
    return name not in view.heads and deployment_topic(name) in view.unreadable


async def _delete_found(broker: BrokerAddress, name: str, circuit_id: str | None) -> None:
    """Delete whatever a deployment whose record is broken left retained under its name (its
    head, its parts) and its circuit id if its head says one (its assignments and Readies): read
    from the broker, since the record cannot say. The name is the one the head was found under,
    whatever the head itself says."""
    filters = [part_topic(name, "+")]
    if circuit_id is not None:
        filters += [topic(circuit_id, "spec", "+"), topic(circuit_id, "ready", "+")]
    try:
        found = await read_retained(broker, filters)
    except TransportError as exc:
        raise broker_failed(broker, exc, "cannot read what the deployment left") from exc
    async with _retainer(broker) as send:
        await send([(deployment_topic(name), None)])
        await send([(left, None) for left in found])


@contextlib.asynccontextmanager
async def _retainer(broker: BrokerAddress) -> AsyncIterator[Send]:
    """A Send on a connection of the data plane's session (gates/mqtt311.py), which keeps 1,000
    publishes in flight without a task each: undeploying 65,000 gates (130,000 deletions) takes
    seconds, where aiomqtt's publish_all took a minute. BrokerError if the broker fails it."""

    async def send(batch: list[tuple[str, BaseModel | None]]) -> None:
        await session.publish_all([(name, encode(message)) for name, message in batch], retain=True)

    try:
        session = await Session.open(broker, lambda name, payload: None)
        try:
            yield send
        finally:
            session.close()
    except (TransportError, TimeoutError) as exc:
        raise BrokerError(f"the broker at {broker} did not take the deletions: {exc or 'no answer in time'}") from exc


async def _read(broker: BrokerAddress, records: Collection[str] | None) -> ClusterView:
    """The cluster, with the records of the deployments named (None: all) read whole."""
    try:
        return await read_cluster(broker, records=records)
    except UnsupportedBroker as exc:
        raise BrokerError(str(exc)) from exc
    except TransportError as exc:
        raise broker_failed(broker, exc, "cannot read the cluster's state") from exc
