"""A gate host: one long-lived process that runs whatever gates the broker assigns to it.

A host knows no circuit. It announces itself on gatemesh-sys/hosts/NAME (retained, with a
last will that says `offline`, so the broker announces its death), subscribes to every
deployment's retained assignments (gatemesh/+/spec/+) and runs, as its own actor, each gate
assigned to its name *and* its incarnation. By default all of a host's gates share one MQTT
connection (gates/mux.py); with connections="per-gate" each gate has its own. An assignment
that is deleted (an empty retained message) or moved to another host stops the gate. What the
broker retains decides, never a message alone: a message on an assignment topic only makes
the host read that topic's retained assignment back (see `_on_assignment`).

If the broker connection drops, the host and its gates' connection (or each gate's own)
reconnect on their own, keeping the gates' state; a host process that restarts is a new
incarnation and ignores the assignments of its previous life.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Literal, NoReturn

import aiomqtt
from pydantic import BaseModel, ValidationError

from gates.actor import GateActor
from gates.errors import ConnectionLost, NotAuthorised, TransportError
from gates.faults import Faults
from gates.lifecycle import Backoff, cancel_and_wait, first_failure
from gates.mqtt311 import QoS, Session
from gates.mux import SUBSCRIBE_BATCH, SharedConnection
from gates.protocol import (
    BROKER,
    NAME_CHARACTERS,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    NAME_RULE,
    ORCHESTRATOR,
    Assignment,
    ErrorCode,
    ErrorReport,
    GateSpec,
    HostPresence,
    host_topic,
    parse_topic,
    topic,
    what_is_wrong,
)
from gates.tensor_actor import TensorActor
from gates.tensor_protocol import ANY_ASSIGNMENT, TensorAssignment, TensorSpec
from gates.transport import QOS, SYNC_ROOT, BrokerAddress, connect, incoming, publish_all, read_retained, subscribe_all

log = logging.getLogger(__name__)

KEEPALIVE = 6
"""Seconds of silence after which the presence connection pings: the broker declares a silent
host lost after 1.5x this, 9 s, as for the data plane's sessions (gates/mqtt311.py). paho pings
only on its 1 s tick once KEEPALIVE has passed, so with 2 s a loop turn of over a second at the
wrong moment (a host running 21,000 gates has them in every pass on a busy machine) dropped a
live host; 6 s leaves 2 s of slack (docs/benchmarks.md)."""
SETTLE = 0.5
"""Seconds without a new assignment notice after which a host whose gates changed settles (`_settle`)."""
VERIFY_BATCH = 1000
"""Assignment topics read back per connection (see GateHost._follow_retained)."""
CLOSED_AT_ONCE = 1.0
"""Seconds: a connection the broker closes this soon after the host announced itself was closed
because of it (an ACL that does not let the host's account publish its presence)."""
CLOSED_AT_ONCE_TIMES = 3
"""Such closings in a row, before the host was ever online for longer, after which it stops."""


Connections = Literal["shared", "per-gate"]
Key = tuple[str, str]
"""(deployment, gate): a gate this host may run."""
Outgoing = tuple[str, BaseModel | None]
"""A message to publish (None: delete the topic's retained message)."""
AnyAssignment = Assignment | TensorAssignment


class HostNameTaken(RuntimeError):
    """Another live host already announced this name."""


class PresenceRefused(RuntimeError):
    """The broker closes the host's connection each time it announces itself: its account may
    not publish this name's presence. Retrying forever would only say "online" again and again."""


class InvalidHostName(ValueError):
    """A host name that cannot be a topic level (the rule is gates.protocol.NAME_RULE)."""


def default_name(machine: str | None = None, pid: int | None = None) -> str:
    """`host-<hostname>-<pid>`: unique per process on one machine, and per container (whose hostname is its id).

    Always a valid name: the prefix gives it a letter first (a container's id often starts with a
    digit), characters a name may not hold become '-', and a long hostname is cut to fit.
    """
    machine = socket.gethostname() if machine is None else machine
    pid = os.getpid() if pid is None else pid
    suffix = f"-{pid}"
    stem = "host-" + re.sub(f"[^{NAME_CHARACTERS}]", "-", machine)
    return stem[: NAME_MAX_LENGTH - len(suffix)] + suffix


@dataclass
class _Running:
    spec: GateSpec | TensorSpec
    task: asyncio.Task[None]


class GateHost:
    """Serves assignments for one host name until cancelled."""

    def __init__(
        self,
        name: str,
        broker: BrokerAddress,
        *,
        faults: Faults | None = None,
        connections: Connections = "shared",
        qos: QoS = 1,
    ) -> None:
        if qos != 1 and connections != "shared":
            raise ValueError("--qos 0 needs --connections shared (a per-gate connection always uses QoS 1)")
        if re.fullmatch(NAME_PATTERN, name) is None:  # it names a topic level: gatemesh-sys/hosts/NAME
            raise InvalidHostName(f"invalid host name {name!r}: a host name must be {NAME_RULE}")
        if name in (ORCHESTRATOR, BROKER):  # traces, --explain and the Lamport diagram name them as hosts
            raise InvalidHostName(f"invalid host name {name!r}: {ORCHESTRATOR} and {BROKER} are not gate hosts")
        self.name = name
        self.broker = broker
        self.faults = faults
        self.shared = SharedConnection(broker, qos=qos) if connections == "shared" else None
        """With "shared", all of this host's gates use one connection; with "per-gate", one each."""
        self.incarnation = secrets.token_hex(4)
        self._gates: dict[Key, _Running] = {}
        self._unverified: set[Key] = set()
        """Gates whose retained assignment must be read before acting on them (see _on_assignment)."""
        self._follower: asyncio.Task[None] | None = None
        self._started_or_stopped = 0
        """Gates started or stopped so far: the follower settles memory after a change (`_settle`)."""
        self._was_online = False
        """Online once at least: from then on a refusal is retried (the broker's accounts may be changing)."""
        self._online_at: float | None = None
        """When this connection announced the host (time.monotonic()); None before it has."""
        self._closed_at_once = 0
        """Connections in a row the broker closed right after the host announced itself."""
        self._stayed_online = False
        """A connection outlived CLOSED_AT_ONCE after announcing the host: its account may do so."""

    def presence(self, state: str, reason: str = "") -> HostPresence:
        return HostPresence.model_validate(
            {
                "host": self.name,
                "incarnation": self.incarnation,
                "state": state,
                "reason": reason,
                "machine": socket.gethostname(),
                "pid": os.getpid(),
                "faults": self.faults.text if self.faults is not None and self.faults.active else "",
            }
        )

    @property
    def gates(self) -> list[tuple[str, str]]:
        """(deployment, gate) of every gate running here."""
        return sorted(self._gates)

    async def serve(self) -> NoReturn:
        """Announce, serve assignments, reconnect after a lost connection; on cancel say goodbye.

        Raises NotAuthorised if the broker refuses this host's credentials before it was ever
        online: a wrong password is said once, not retried forever."""
        try:
            await self._serve()
        except BaseExceptionGroup as group:
            raise first_failure(group) from group

    async def _serve(self) -> NoReturn:
        await self._refuse_a_taken_name()
        async with asyncio.TaskGroup() as group:
            if self.shared is not None:
                group.create_task(self.shared.serve())
            try:
                backoff = Backoff()
                while True:
                    try:
                        await self._session(group)
                    except TransportError as exc:
                        if isinstance(exc, NotAuthorised) and not self._was_online:
                            raise
                        self._count_closed_at_once(exc)
                        delay = backoff.next()
                        log.warning("host %s: no broker connection (%s); retrying in %g s", self.name, exc, delay)
                        await asyncio.sleep(delay)
                        await self._refuse_a_taken_name(away=True)
            finally:
                await cancel_and_wait(running.task for running in self._gates.values())

    def _count_closed_at_once(self, lost: TransportError) -> None:
        """PresenceRefused once the broker has closed CLOSED_AT_ONCE_TIMES connections in a row
        right after the host announced itself with an account, and none ever stayed up longer:
        Mosquitto closes a connection whose publish its ACL denies (docs/PROTOCOL.md, the
        watcher), and announcing is this connection's only one."""
        online_at, self._online_at = self._online_at, None
        if online_at is None or time.monotonic() - online_at > CLOSED_AT_ONCE:
            self._stayed_online = self._stayed_online or online_at is not None
            self._closed_at_once = 0
            return
        self._closed_at_once += 1
        if self._closed_at_once < CLOSED_AT_ONCE_TIMES or self._stayed_online or not self.broker.username:
            return  # without an account no ACL applies: another cause (a broker restarting), worth waiting out
        raise PresenceRefused(
            f"the broker at {self.broker} closed this host's connection right after it announced itself as "
            f"{self.name!r}, {self._closed_at_once} times in a row ({lost}): its account ({self.broker.username}) "
            "may not publish "
            f"{host_topic(self.name)}. With accounts and an ACL (`gatemesh secure init`), a host's account "
            f"speaks for its own name only: give --name the host that account is for, or use {self.name}'s account"
        )

    async def _refuse_a_taken_name(self, *, away: bool = False) -> None:
        """HostNameTaken if another process is online under this name: at start, or (`away`)
        before reconnecting, since a host away long enough (paused, cut off) to be declared
        offline may have been replaced meanwhile; announcing itself again would hide that one."""
        try:
            retained = await read_retained(self.broker, [host_topic(self.name)])
        except TransportError as exc:
            if isinstance(exc, NotAuthorised) and not away:
                raise
            return  # no broker yet (or, once online, accounts changing): the session loop reports and retries
        # only this name's own topic: amqtt 0.12 may also hand a new subscriber retained messages of
        # topics that another client's wildcard covers (other hosts' presences)
        for payload in [retained[name] for name in retained if name == host_topic(self.name)]:
            with contextlib.suppress(ValidationError):
                other = HostPresence.model_validate_json(payload)
                if other.state == "online" and other.incarnation != self.incarnation:
                    who = f"(machine {other.machine}, pid {other.pid}, incarnation {other.incarnation})"
                    if away:
                        raise HostNameTaken(
                            f"while this host was away, another process took the name {self.name!r} {who}; "
                            "this one stops, and its gates with it: that one serves the name now"
                        )
                    raise HostNameTaken(
                        f"a host named {self.name!r} is already online {who}; "
                        "give this one another --name, or stop that one first"
                    )

    async def _session(self, group: asyncio.TaskGroup) -> None:
        will = aiomqtt.Will(
            host_topic(self.name), self.presence("offline", "connection lost").model_dump_json(), qos=QOS, retain=True
        )
        own = host_topic(self.name)
        async with connect(self.broker, will=will, keepalive=KEEPALIVE) as mqtt:
            await subscribe_all(mqtt, [topic("+", "spec", "+"), own])  # own: to hear the announcement back
            self._recheck_running(group)
            await publish_all(mqtt, [(own, self.presence("online"))], retain=True)
            self._was_online = True
            self._online_at = time.monotonic()
            heard = False
            try:
                async for name, payload in incoming(mqtt):
                    if name != own:
                        self._on_assignment(group, name, payload)
                    elif not heard and self._is_own_announcement(payload):
                        # said once the broker delivers it: one whose ACL refuses the announcement
                        # closes the connection instead, and the host is not online
                        heard = True
                        log.info("host %s (incarnation %s) online at %s", self.name, self.incarnation, self.broker)
            except asyncio.CancelledError:
                goodbye = self.presence("offline", "stopped")
                with contextlib.suppress(TransportError, TimeoutError):
                    async with asyncio.timeout(1):
                        await publish_all(mqtt, [(host_topic(self.name), goodbye)], retain=True)
                raise
        raise ConnectionLost("message stream ended")

    def _is_own_announcement(self, payload: bytes) -> bool:
        try:
            presence = HostPresence.model_validate_json(payload)
        except ValidationError:
            return False
        return presence.state == "online" and presence.incarnation == self.incarnation

    def _on_assignment(self, group: asyncio.TaskGroup, name: str, payload: bytes) -> None:
        """A message on an assignment topic is a notice, never an order (docs/PROTOCOL.md).

        MQTT 3.1.1 does not say whether a message was published retained: an empty payload may
        be an undeploy or junk, a valid-looking assignment may be a replay. So a notice that
        could change what this host runs only marks its gate; `_follow_retained` then reads
        what the broker retains for it and acts on that. Notices that change nothing (junk about
        gates that do not run here, a copy of a running gate's assignment) cost nothing.
        """
        parsed = parse_topic(name)
        if parsed is None or parsed[1] != "spec" or parsed[2] is None:
            return
        key = (parsed[0], parsed[2])
        if key not in self._unverified and self._could_change(key, payload):
            self._verify(group, [key])

    def _recheck_running(self, group: asyncio.TaskGroup) -> None:
        """After (re)connecting: an assignment deleted while this host was away sent no notice."""
        self._verify(group, list(self._gates))

    def _verify(self, group: asyncio.TaskGroup, keys: list[Key]) -> None:
        """Mark gates whose retained assignment must be read, and make sure a task reads them."""
        self._unverified.update(keys)
        if self._unverified and (self._follower is None or self._follower.done()):
            self._follower = group.create_task(self._follow_retained(group))

    def _could_change(self, key: Key, payload: bytes) -> bool:
        """Whether acting on this notice could start, stop or change a gate of this host."""
        running = self._gates.get(key)
        if running is None and self.incarnation.encode() not in payload:
            return False  # not an assignment to this process (orchestrators write the id literally): no parse
        try:
            claimed: AnyAssignment | None = ANY_ASSIGNMENT.validate_json(payload)  # a scalar or tensor gate's
        except ValidationError:
            claimed = None
        if running is not None:  # anything but a copy of its own assignment may be a change
            return claimed is None or not self._is_mine(claimed, key) or claimed.spec != running.spec
        return claimed is None or self._is_mine(claimed, key)  # None: it names this process, but is broken

    def _is_mine(self, assignment: AnyAssignment, key: Key) -> bool:
        """An assignment of gate `key` to this host process (its name and its incarnation)."""
        return (
            (assignment.circuit, assignment.spec.id) == key
            and assignment.host == self.name
            and assignment.incarnation == self.incarnation
        )

    async def _follow_retained(self, group: asyncio.TaskGroup) -> None:
        """Read the retained assignment of every marked gate, a batch at a time, and act on it.

        One task does this at a time, so gates start and stop in one place. A batch is one
        short-lived connection for VERIFY_BATCH topics: a deployment of 65,000 gates costs 65
        reads, not 65,000. Gates whose assignments cannot be read stay marked for a retry. Once
        nothing is marked for SETTLE seconds after gates started or stopped, the host settles its
        memory (`_settle`).
        """
        backoff = Backoff()
        changed = False
        while self._unverified:
            batch = list(itertools.islice(self._unverified, VERIFY_BATCH))
            self._unverified.difference_update(batch)
            try:
                retained = await read_back(self.broker, [topic(c, "spec", g) for c, g in batch])
            except (TransportError, TimeoutError) as exc:
                self._unverified.update(batch)
                delay = backoff.next()
                log.warning("host %s: cannot read its assignments (%s); retrying in %g s", self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            outgoing: list[Outgoing] = []
            started_or_stopped = self._started_or_stopped
            for key in batch:
                outgoing += await self._follow(group, key, retained.get(topic(key[0], "spec", key[1])))
            changed = changed or self._started_or_stopped != started_or_stopped
            if outgoing:
                await self._publish(outgoing)
            if changed and not self._unverified:
                await asyncio.sleep(SETTLE)  # a deployment's assignments arrive over seconds: once, at its end
                if not self._unverified:
                    _settle()
                    changed = False

    async def _follow(self, group: asyncio.TaskGroup, key: Key, retained: bytes | None) -> list[Outgoing]:
        """Make gate `key` run here as the assignment the broker holds for it says; what to publish."""
        deployment = key[0]
        try:
            assignment = ANY_ASSIGNMENT.validate_json(retained) if retained else None
        except ValidationError as exc:
            why = f"not a valid assignment: {what_is_wrong(exc, 1)}"
            stopped = await self._stop(key, clear_ready=True)
            if retained is not None and self.incarnation.encode() in retained:  # meant for this process
                return [*stopped, self._refusal(key, why)]  # its deployer hears why its gate never starts
            log.warning("host %s: %s/%s: %s", self.name, *key, why)
            return stopped
        if assignment is None or (assignment.circuit, assignment.spec.id) != key:
            return await self._stop(key, clear_ready=True)  # deleted: the deployment is gone
        if not self._is_mine(assignment, key):
            return await self._stop(key, clear_ready=False)  # another host's (or process's) now
        running = self._gates.get(key)
        if running is not None and running.spec == assignment.spec:
            return []
        await self._stop(key, clear_ready=False)
        try:
            actor: GateActor | TensorActor
            if isinstance(assignment, TensorAssignment):
                connection = self.shared or self.broker
                actor = TensorActor(assignment.spec, deployment, connection, retain_ready=True, faults=self.faults)
            else:
                link = self.shared.link if self.shared is not None else self.broker
                actor = GateActor(
                    assignment.spec, deployment, link, retain_ready=True, faults=self.faults, host=self.name
                )
        except ValueError as exc:
            return [self._refusal(key, str(exc))]
        self._gates[key] = _Running(assignment.spec, group.create_task(actor.serve_forever()))
        self._started_or_stopped += 1
        return []

    def _refusal(self, key: Key, why: str) -> Outgoing:
        """An assignment to this process that it cannot obey: logged, and reported on the gate's
        error topic (a deployer waiting for its Ready hears why it never comes)."""
        deployment, gate = key
        log.warning("host %s: cannot run gate %s/%s: %s", self.name, deployment, gate, why)
        where = topic(deployment, "spec", gate)
        report = ErrorReport(circuit=deployment, sender=self.name, code=ErrorCode.BAD_SCHEMA, message=why, topic=where)
        return (topic(deployment, "error", gate), report)

    async def _stop(self, key: Key, *, clear_ready: bool) -> list[Outgoing]:
        """Stop gate `key` if it runs here; with `clear_ready`, return the deletion of its Ready
        (which it may have retained after the orchestrator deleted it) to publish."""
        running = self._gates.pop(key, None)
        if running is None:
            return []
        self._started_or_stopped += 1
        await cancel_and_wait([running.task])
        log.info("host %s: stopped gate %s/%s", self.name, *key)
        return [(topic(key[0], "ready", key[1]), None)] if clear_ready else []

    async def _publish(self, outgoing: list[Outgoing]) -> None:
        """Deletions (None) retained, error reports not; if the broker is away they are lost, with a warning."""
        try:
            async with connect(self.broker) as mqtt:
                await publish_all(mqtt, [(name, m) for name, m in outgoing if m is None], retain=True)
                await publish_all(mqtt, [(name, m) for name, m in outgoing if m is not None])
        except (TransportError, TimeoutError) as exc:
            log.warning("host %s: could not publish %d message(s): %s", self.name, len(outgoing), exc)


def _settle() -> None:
    """Once the gates a host runs have changed: collect the garbage, then freeze what is left (the
    gates' state, which lives as long as their deployment) out of the collector's full scans.

    A full collection walks every object of the process: for 21,644 gates, 550,000 objects and
    0.25 s of CPU, which on a busy machine stalled every host's loop for 1 to 4 s at the same
    moment of a pass (docs/benchmarks.md). Frozen objects are still freed by refcounting when
    dropped; what stopped gates leave in cycles is collected at the next settling, which unfreezes
    everything first.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def read_back(broker: BrokerAddress, topics: list[str], *, timeout: float = 10.0) -> dict[str, bytes]:
    """The retained message of each topic (absent: none), read on a short-lived connection.

    transport.read_retained's subscribe-then-marker read, over the data plane's session
    (gates/mqtt311.py): 8x faster at 20,000 topics than over aiomqtt, which matters when a
    large deployment arrives. Only copies the broker flags as retained count: a live message
    published to one of the topics meanwhile (junk, say) cannot pass for the retained one.
    """
    marker = f"{SYNC_ROOT}/{secrets.token_hex(8)}"
    found: dict[str, bytes] = {}
    synced = asyncio.get_running_loop().create_future()
    session: Session | None = None

    def on_message(name: str, payload: bytes) -> None:
        if name == marker and not synced.done():
            synced.set_result(None)
        elif session is not None and session.retained_copy and payload:
            found[name] = payload

    async with asyncio.timeout(timeout):
        session = await Session.open(broker, on_message, timeout=timeout)
        try:
            for start in range(0, len(topics), SUBSCRIBE_BATCH):
                await session.subscribe(topics[start : start + SUBSCRIBE_BATCH])
            await session.subscribe([marker])
            session.publish(marker, b"sync")
            await asyncio.wait([synced, session.lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.close()
    if not synced.done():
        raise session.lost.result()
    return found
