"""Mosquitto stopped and started again on the same port: hosts, gates and orchestrators reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.launch import free_port, mosquitto
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, on_deployment, undeploy
from orchestrator.errors import HostLost, RunConnectionLost
from orchestrator.reference import evaluate
from tests.integration.test_hosts import start_hosts
from tests.processes import gatemesh
from tests.unit.test_reference import NEURON, NEURON_GRADS

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A directory Mosquitto can write after dropping root (pytest's tmp_path has 0700 parents)."""
    with tempfile.TemporaryDirectory(prefix="gatemesh-data-") as path:
        yield Path(path)


async def test_hosts_and_a_running_orchestrator_survive_a_broker_restart(data_dir: Path) -> None:
    port = free_port()
    circuit = compile_source("sigmoid(w0*x0 + w1*x1 + w2)")
    name = f"restart-{secrets.token_hex(3)}"
    first_broker = contextlib.ExitStack()
    url = first_broker.enter_context(mosquitto(port=port, data_dir=data_dir))
    broker = BrokerAddress.parse(url)
    hosts = await asyncio.to_thread(start_hosts, url, "r")
    try:
        await deploy_to_hosts(circuit, name, broker, hosts=[h.name for h in hosts])
        async with on_deployment(name, broker) as runner:
            first = await runner.run(NEURON)
            assert (first.value, first.grads) == (0.7310585786300049, NEURON_GRADS)

            first_broker.close()  # Mosquitto saves its retained messages and stops
            # Stopping, Mosquitto sends every client's last will: the hosts are reported offline.
            # A run while the broker is away fails by name, in time.
            with pytest.raises((RunConnectionLost, HostLost)):
                await runner.run(NEURON, timeout=1.0)

            with mosquitto(port=port, data_dir=data_dir):
                # the same runner reconnects; the hosts reconnect as the same processes and
                # announce themselves again, which clears their loss; the gates resubscribe
                async with asyncio.timeout(20):
                    while runner.lost or not runner.connected.is_set():  # noqa: ASYNC110 (two conditions)
                        await asyncio.sleep(0.05)
                again = await runner.run(NEURON, timeout=2.0, retries=10)
                assert again == first
                for k in range(20):
                    job = {key: value + k / 10 for key, value in NEURON.items()}
                    assert await runner.run(job) == evaluate(circuit, job)
                # a new orchestrator process finds the deployment: its record survived the restart
                args = [f"{k}={v}" for k, v in NEURON.items()]
                done = await asyncio.to_thread(gatemesh, "run", "--deployed", name, *args, "--json", "--broker", url)
                assert done.returncode == 0, done.stderr
                assert '"value":0.7310585786300049' in done.stdout
                await undeploy(name, broker)
    finally:
        first_broker.close()  # does nothing if already stopped
        for host in hosts:
            host.stop()
