"""A gate host: one long-lived process that runs whatever gates the broker assigns to it.

A host knows no circuit. It announces itself on gatemesh-sys/hosts/NAME (retained, with a
last will that says `offline`, so the broker announces its death), subscribes to every
deployment's retained assignments (gatemesh/+/spec/+) and runs, as its own actor with its
own connection, each gate assigned to its name *and* its incarnation. An assignment that
is deleted (an empty retained message) or moved to another host stops the gate.

If the broker connection drops, the host and each of its gates reconnect on their own,
keeping their state; a host process that restarts is a new incarnation and ignores the
assignments of its previous life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Literal, NoReturn

import aiomqtt
from pydantic import ValidationError

from gates.actor import GateActor
from gates.faults import Faults
from gates.lifecycle import Backoff, cancel_and_wait
from gates.mqtt311 import QoS
from gates.mux import SharedConnection
from gates.protocol import (
    Assignment,
    ErrorCode,
    ErrorReport,
    GateSpec,
    HostPresence,
    host_topic,
    parse_topic,
    topic,
)
from gates.transport import QOS, BrokerAddress, client, publish_all, read_retained, subscribe_all

log = logging.getLogger(__name__)

KEEPALIVE = 2
"""Seconds between pings: the broker declares a silent host lost after 1.5x this."""


Connections = Literal["shared", "per-gate"]


class HostNameTaken(RuntimeError):
    """Another live host already announced this name."""


def default_name() -> str:
    """Unique per process on one machine, and per container (whose hostname is its id)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Running:
    spec: GateSpec
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
        self.name = name
        self.broker = broker
        self.faults = faults
        self.shared = SharedConnection(broker, qos=qos) if connections == "shared" else None
        """With "shared", all of this host's gates use one connection; with "per-gate", one each."""
        self.incarnation = secrets.token_hex(4)
        self._gates: dict[tuple[str, str], _Running] = {}
        self.presence("online")  # a name that cannot be a topic level fails here, not later

    def presence(self, state: str, reason: str = "") -> HostPresence:
        return HostPresence.model_validate(
            {
                "host": self.name,
                "incarnation": self.incarnation,
                "state": state,
                "reason": reason,
                "machine": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    @property
    def gates(self) -> list[tuple[str, str]]:
        """(deployment, gate) of every gate running here."""
        return sorted(self._gates)

    async def serve(self) -> NoReturn:
        """Announce, serve assignments, reconnect after a lost connection; on cancel say goodbye."""
        await self._refuse_a_taken_name()
        async with asyncio.TaskGroup() as group:
            if self.shared is not None:
                group.create_task(self.shared.serve())
            try:
                backoff = Backoff()
                while True:
                    try:
                        await self._session(group)
                    except aiomqtt.MqttError as exc:
                        delay = backoff.next()
                        log.warning("host %s: no broker connection (%s); retrying in %g s", self.name, exc, delay)
                        await asyncio.sleep(delay)
            finally:
                await cancel_and_wait(running.task for running in self._gates.values())

    async def _refuse_a_taken_name(self) -> None:
        try:
            retained = await read_retained(self.broker, [host_topic(self.name)])
        except (aiomqtt.MqttError, TimeoutError):
            return  # no broker yet: the session loop reports and retries
        # only this name's own topic: amqtt 0.12 may also hand a new subscriber retained messages of
        # topics that another client's wildcard covers (other hosts' presences)
        for payload in [retained[name] for name in retained if name == host_topic(self.name)]:
            with contextlib.suppress(ValidationError):
                other = HostPresence.model_validate_json(payload)
                if other.state == "online":
                    raise HostNameTaken(
                        f"a host named {self.name!r} is already online (machine {other.machine}, pid {other.pid}); "
                        "give this one another --name, or stop that one first"
                    )

    async def _session(self, group: asyncio.TaskGroup) -> None:
        will = aiomqtt.Will(
            host_topic(self.name), self.presence("offline", "connection lost").model_dump_json(), qos=QOS, retain=True
        )
        async with client(self.broker, will=will, keepalive=KEEPALIVE) as mqtt:
            await subscribe_all(mqtt, [topic("+", "spec", "+")])
            await publish_all(mqtt, [(host_topic(self.name), self.presence("online"))], retain=True)
            log.info("host %s (incarnation %s) online at %s", self.name, self.incarnation, self.broker)
            try:
                async for message in mqtt.messages:
                    raw = message.payload
                    payload = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
                    await self._on_assignment(mqtt, group, message.topic.value, payload)
            except asyncio.CancelledError:
                goodbye = self.presence("offline", "stopped")
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(1):
                        await publish_all(mqtt, [(host_topic(self.name), goodbye)], retain=True)
                raise
        raise aiomqtt.MqttError("message stream ended")

    async def _on_assignment(self, mqtt: aiomqtt.Client, group: asyncio.TaskGroup, name: str, payload: bytes) -> None:
        parsed = parse_topic(name)
        if parsed is None or parsed[2] is None:
            return
        deployment, gate = parsed[0], parsed[2]
        key = (deployment, gate)
        if not payload:  # the assignment was deleted: the deployment is gone
            await self._stop(mqtt, key, clear_ready=True)
            return
        try:
            assignment = Assignment.model_validate_json(payload)
            if assignment.circuit != deployment or assignment.spec.id != gate:
                raise ValueError(f"assignment for {assignment.circuit}/{assignment.spec.id} on topic {name}")
        except (ValidationError, ValueError) as exc:
            log.warning("host %s: rejected the assignment on %s: %s", self.name, name, exc)
            return
        if assignment.host != self.name:
            await self._stop(mqtt, key, clear_ready=False)  # moved elsewhere, if it ever was here
            return
        if assignment.incarnation != self.incarnation:
            log.info("host %s: ignoring %s/%s, assigned to an earlier run of this host", self.name, *key)
            return
        running = self._gates.get(key)
        if running is not None and running.spec == assignment.spec:
            return  # the same assignment again (a retained copy after reconnecting)
        await self._stop(mqtt, key, clear_ready=False)
        try:
            link = self.shared.link if self.shared is not None else self.broker
            actor = GateActor(assignment.spec, deployment, link, retain_ready=True, faults=self.faults, host=self.name)
        except ValueError as exc:
            report = ErrorReport(
                circuit=deployment, sender=self.name, code=ErrorCode.BAD_SCHEMA, message=str(exc), topic=name
            )
            await publish_all(mqtt, [(topic(deployment, "error", gate), report)])
            return
        self._gates[key] = _Running(assignment.spec, group.create_task(actor.serve_forever()))

    async def _stop(self, mqtt: aiomqtt.Client, key: tuple[str, str], *, clear_ready: bool) -> None:
        running = self._gates.pop(key, None)
        if running is None:
            return
        await cancel_and_wait([running.task])
        if clear_ready:  # its Ready may have been retained after the orchestrator cleared it
            await publish_all(mqtt, [(topic(key[0], "ready", key[1]), None)], retain=True)
        log.info("host %s: stopped gate %s/%s", self.name, *key)
