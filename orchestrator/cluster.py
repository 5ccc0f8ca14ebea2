"""What the broker knows about the cluster: live hosts and deployment records.

Both are retained messages, so any orchestrator process (a later `gatemesh run --deployed`,
`gatemesh status`, a second user) reads the same picture without a server of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gates.protocol import HostPresence, Incarnation, Name, deployment_topic, host_topic, last_level, topic
from gates.transport import BrokerAddress, check_retained_reads, read_retained
from orchestrator.circuit import Circuit

DEPLOYMENT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$"
"""A deployment's name: its circuit id adds `.` and 8 hex digits, and must stay a Name."""


class DeploymentRecord(BaseModel):
    """A deployment, retained on gatemesh-sys/deployments/NAME once all its gates are ready."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["deployment"] = "deployment"
    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN)
    circuit_id: Name = Field(description="the topic prefix of this deployment: gatemesh/<circuit_id>/...")
    circuit: Circuit
    placement: dict[Name, Name] = Field(description="gate id -> host name")
    hosts: dict[Name, Incarnation] = Field(description="host name -> the incarnation its gates were given to")
    created: float = Field(default_factory=time.time)

    def gates_on(self, host: str) -> list[str]:
        return [gate for gate, placed in self.placement.items() if placed == host]


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
    unreadable: list[str] = field(default_factory=list)

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


async def read_cluster(broker: BrokerAddress, *, with_ready: bool = False) -> ClusterView:
    """The retained hosts and deployments (and, if asked, every deployment's Ready gates).

    UnsupportedBroker if the broker cannot give them (checked once per broker and process):
    on such a broker they would come back empty, as if nothing were deployed.
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
                view.deployments[last_level(name)] = DeploymentRecord.model_validate_json(payload)
            else:
                circuit_id = name.split("/")[1]
                view.ready.setdefault(circuit_id, set()).add(last_level(name))
        except ValidationError:
            view.unreadable.append(name)
    return view
