"""Deploy a circuit's gates as actors inside this process, each with its own connection.

The actors share nothing but the broker: every value and gradient still crosses it. A
deployment gets a fresh id, so several deployments of one circuit never hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from gates.actor import GateActor
from gates.lifecycle import cancel_and_wait
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.runner import Runner, open_runner


def deployment_id(circuit: Circuit) -> str:
    """A deployment id unique enough to share a broker with any other deployment."""
    return f"{circuit.name[:40]}-{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def in_process(circuit: Circuit, broker: BrokerAddress, *, ready_timeout: float = 30.0) -> AsyncIterator[Runner]:
    """Start one actor per gate, wait until all are ready, yield a Runner; stop them on exit."""
    deployment = deployment_id(circuit)
    async with open_runner(circuit, deployment, broker) as runner, asyncio.TaskGroup() as group:
        actors = [group.create_task(GateActor(spec, deployment, broker).serve()) for spec in circuit.specs()]
        try:
            await runner.wait_ready(ready_timeout)
            yield runner
        finally:
            await cancel_and_wait(actors)
