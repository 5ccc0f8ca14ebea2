"""Putting a tensor circuit's gates somewhere for a training run: in this process, or on gate hosts.

Either way every frame crosses the broker. In this process, the actors share one MQTT
connection (gates/mux.py). On hosts, each gate is a retained TensorAssignment on the same
spec topic a scalar gate uses, so any `gatemesh host` (`python -m gates`) runs it; the
assignments and the gates' retained Ready messages are deleted when training ends.

Placements: `by-replica` (the default) puts each replica of the network on its own host, in
turn (replica i on host i mod the hosts: more replicas than hosts share them), and the
parameters, their penalties and the loss on the first; `by-layer`, `round-robin` and placement
files are orchestrator/placement.py's, as for scalar circuits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence

from gates.errors import TransportError
from gates.faults import Faults
from gates.frame import MAX_ELEMENTS
from gates.lifecycle import cancel_and_wait, despite_cancellation
from gates.mux import SharedConnection
from gates.protocol import ORCHESTRATOR, topic
from gates.tensor_actor import TensorActor
from gates.tensor_protocol import TensorAssignment
from gates.transport import BrokerAddress
from orchestrator.cluster import read_cluster
from orchestrator.deploy import UNDEPLOY_SECONDS, HostChoice, wait_for_hosts
from orchestrator.errors import DeployError, GatemeshError, broker_failed
from orchestrator.placement import place
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.tensor_mesh import MeshEngine, open_engine

PLACEMENTS = ("by-replica", "by-layer", "round-robin")
_REPLICA = re.compile(r"^r(\d+)\.")


def circuit_id(circuit: TensorCircuit) -> str:
    return f"{circuit.name[:40]}.{secrets.token_hex(4)}"


def check_frames(circuit: TensorCircuit) -> None:
    """Refuse, before deploying, a circuit a gate of which would send more numbers than a frame
    carries (gates/frame.py): its first step would fail. A gradient has the shape of the input
    it is for, another gate's output or a leaf: checking every gate's output covers both."""
    for gate, shape in circuit.shapes.items():
        numbers = math.prod(shape)
        if numbers > MAX_ELEMENTS:
            raise DeployError(
                f"gate {gate}: its output {shape} is {numbers:,} numbers; a frame carries at most {MAX_ELEMENTS:,}"
            )


@contextlib.asynccontextmanager
async def in_process(
    circuit: TensorCircuit,
    broker: BrokerAddress,
    *,
    faults: Faults | None = None,
    ready_timeout: float = 30.0,
    step_timeout: float = 30.0,
) -> AsyncIterator[MeshEngine]:
    """One actor per gate in this process on one shared connection; stopped on exit."""
    check_frames(circuit)
    cid = circuit_id(circuit)
    async with open_engine(circuit, cid, broker, step_timeout=step_timeout) as engine, asyncio.TaskGroup() as group:
        shared = SharedConnection(broker)
        tasks = [group.create_task(shared.serve())]
        tasks += [
            group.create_task(TensorActor(spec, cid, shared, faults=faults).serve_forever()) for spec in circuit.specs()
        ]
        try:
            await engine.wait_ready(ready_timeout)
            yield engine
        finally:
            await cancel_and_wait(tasks)


def place_tensor(circuit: TensorCircuit, hosts: Sequence[str], strategy: str) -> dict[str, str]:
    """gate id -> host for every gate of a training circuit."""
    if not hosts:
        raise DeployError("there are no hosts to place gates on")
    if strategy != "by-replica":
        return place(circuit, hosts, strategy)
    mapping = {}
    for g in circuit.gates:
        replica = _REPLICA.match(g.id)
        mapping[g.id] = hosts[int(replica.group(1)) % len(hosts)] if replica else hosts[0]
    return mapping


@contextlib.asynccontextmanager
async def on_hosts(
    circuit: TensorCircuit,
    broker: BrokerAddress,
    *,
    hosts: HostChoice = None,
    placement: str = "by-replica",
    timeout: float = 30.0,
    step_timeout: float = 30.0,
    waiting: Callable[[str], None] | None = None,
) -> AsyncIterator[MeshEngine]:
    """The circuit's gates on live gate hosts for the duration of the block (`waiting` is told
    once if the hosts are not online at first, as deploy.wait_for_hosts says)."""
    check_frames(circuit)
    names = await wait_for_hosts(broker, hosts, timeout, waiting)
    try:
        view = await read_cluster(broker, records=())  # its hosts only
    except (TransportError, TimeoutError) as exc:
        raise broker_failed(broker, exc, "cannot read the cluster's state") from exc
    mapping = place_tensor(circuit, names, placement)
    used = sorted(set(mapping.values()), key=names.index)
    incarnations = {h: view.hosts[h].incarnation for h in used}
    cid = circuit_id(circuit)
    assignments = [
        (
            topic(cid, "spec", spec.id),
            TensorAssignment(
                circuit=cid,
                sender=ORCHESTRATOR,
                host=mapping[spec.id],
                incarnation=incarnations[mapping[spec.id]],
                spec=spec,
            ),
        )
        for spec in circuit.specs()
    ]
    async with open_engine(
        circuit, cid, broker, hosts=incarnations, placement=mapping, step_timeout=step_timeout
    ) as engine:
        try:
            await engine.publish_json(assignments, retain=True)
            await engine.wait_ready(timeout)
            yield engine
        finally:  # after a Ctrl-C too, the withdrawal runs to its end (a second Ctrl-C cuts it short)

            async def withdraw() -> None:
                await engine.publish_json([(name, None) for name, _ in assignments], retain=True)
                await engine.publish_json([(topic(cid, "ready", g.id), None) for g in circuit.gates], retain=True)

            with contextlib.suppress(GatemeshError, TimeoutError):
                await despite_cancellation(withdraw, UNDEPLOY_SECONDS)
