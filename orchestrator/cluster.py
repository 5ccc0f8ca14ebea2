"""What the broker knows about the cluster: live hosts and deployment records.

Both are retained messages, so any orchestrator process (a later `gatemesh run --deployed`,
`gatemesh status`, a second user) reads the same picture without a server of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

from pydantic import ValidationError

from gates.protocol import HostPresence, deployment_topic, host_topic, last_level, topic
from gates.transport import BrokerAddress, check_retained_reads, read_retained, read_retained_until
from orchestrator.records import (
    DEPLOYMENT_NAME_PATTERN,
    RETAINED_RECORD,
    DeploymentHead,
    DeploymentRecord,
    RecordError,
    assemble,
    head_of,
    part_topic,
)

PARTS_TIMEOUT = 60.0
"""Seconds to read every part of the deployments asked for (65 parts, 6.5 MB: about 1 s)."""

__all__ = ["DEPLOYMENT_NAME_PATTERN", "ClusterView", "DeploymentRecord", "host_problem", "read_cluster"]


def host_problem(expected_incarnation: str, presence: HostPresence | None) -> str | None:
    """Why a host can no longer serve gates given to `expected_incarnation`, or None if it can."""
    if presence is None:
        return "has never announced itself"
    if presence.incarnation != expected_incarnation:
        return "restarted: the new process does not run the old process's gates"
    if presence.state != "online":
        return "was stopped" if presence.reason == "stopped" else f"went offline ({presence.reason or 'no reason'})"
    return None


@dataclass
class ClusterView:
    hosts: dict[str, HostPresence] = field(default_factory=dict)
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    ready: dict[str, set[str]] = field(default_factory=dict)
    """circuit id -> ids of the gates whose (retained) Ready is on the broker."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """topic -> why its retained message (a host, or a deployment's record) could not be read."""
    heads: dict[str, DeploymentHead] = field(default_factory=dict)
    """name -> every deployment's head: what it is, without its gates."""
    broken: dict[str, DeploymentHead] = field(default_factory=dict)
    """name -> the head of each deployment whose parts do not add up (the reason is in `unreadable`)."""

    @property
    def online(self) -> list[str]:
        return sorted(name for name, p in self.hosts.items() if p.state == "online")

    def lost_hosts(self, record: DeploymentRecord) -> dict[str, str]:
        """host -> what happened to it, for every host of `record` that cannot serve its gates."""
        lost = {}
        for host, incarnation in record.hosts.items():
            problem = host_problem(incarnation, self.hosts.get(host))
            if problem is not None:
                lost[host] = problem
        return lost


async def read_cluster(
    broker: BrokerAddress, *, with_ready: bool = False, records: Collection[str] | None = None
) -> ClusterView:
    """The retained hosts and deployments (and, if asked, every deployment's Ready gates).

    A deployment's record is its head and its parts (orchestrator/records.py): the heads are
    read first, then the parts of the deployments named in `records` (None: all), on a second
    connection, and assembled off the event loop (65,000 gates take ~2 s). A deployment whose
    parts do not add up (one is missing, or of another circuit id) is left out, and `unreadable`
    says why. Every deployment's head is in `heads`, whether its parts were read or not.
    UnsupportedBroker if the broker cannot give retained messages back (checked once per broker
    and process): on such a broker they would come back empty, as if nothing were deployed.
    """
    await check_retained_reads(broker)
    filters = [host_topic("+"), deployment_topic("+")]
    if with_ready:
        filters.append(topic("+", "ready", "+"))
    view = ClusterView()
    for name, payload in (await read_retained(broker, filters)).items():
        try:
            if name.startswith(host_topic("")):
                view.hosts[last_level(name)] = HostPresence.model_validate_json(payload)
            elif name.startswith(deployment_topic("")):
                record = RETAINED_RECORD.validate_json(payload)
                if record.name != last_level(name):  # deleted under its topic's name, which it does not say
                    view.unreadable[name] = f"its head names deployment {record.name!r}, not {last_level(name)!r}"
                elif isinstance(record, DeploymentHead):
                    view.heads[last_level(name)] = record
                else:  # a whole record in one message, as gatemesh wrote them before parts
                    view.deployments[last_level(name)] = record
                    view.heads[last_level(name)] = head_of(record)
            else:
                circuit_id = name.split("/")[1]
                view.ready.setdefault(circuit_id, set()).add(last_level(name))
        except ValidationError as exc:
            view.unreadable[name] = f"not a valid message: {exc.errors(include_url=False)[0]['msg']}"
    heads = {n: h for n, h in view.heads.items() if n not in view.deployments and (records is None or n in records)}
    if heads:
        retained = await read_retained(broker, [part_topic(name, "+") for name in heads], timeout=PARTS_TIMEOUT)
        for name, head in heads.items():
            prefix = part_topic(name, "")
            parts = {int(t[len(prefix) :]): p for t, p in retained.items() if _numbered(t, prefix)}
            try:
                view.deployments[name] = await asyncio.to_thread(assemble, head, parts)
            except RecordError as exc:
                view.unreadable[deployment_topic(name)] = str(exc)
                view.broken[name] = head
    return view


async def read_record(
    broker: BrokerAddress, head: DeploymentHead, *, timeout: float = PARTS_TIMEOUT
) -> DeploymentRecord:
    """The whole record of the deployment `head` names, read by subscribing only (the read-only
    watcher may not publish `read_cluster`'s markers): the head says how many parts to wait for.
    RecordError if they do not add up; TimeoutError if some never come."""
    prefix = part_topic(head.name, "")
    wanted = [part_topic(head.name, i) for i in range(head.parts)]
    retained = await read_retained_until(
        broker, [part_topic(head.name, "+")], lambda found: all(t in found for t in wanted), timeout=timeout
    )
    parts = {int(t[len(prefix) :]): p for t, p in retained.items() if _numbered(t, prefix)}
    return await asyncio.to_thread(assemble, head, parts)


def _numbered(name: str, prefix: str) -> bool:
    """Whether topic `name` is `prefix` followed by a part number."""
    index = name[len(prefix) :]
    return name.startswith(prefix) and index.isascii() and index.isdigit() and len(index) < 10
