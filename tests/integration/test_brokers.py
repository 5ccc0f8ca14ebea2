"""Which brokers can carry the control plane: Mosquitto and amqtt can; one that does not send
retained messages to a wildcard subscription in time is named as such, not taken for empty.

No broker that lacks it can be installed here (RabbitMQ and aedes are neither on PyPI nor in
Debian's archive as MQTT brokers this suite could start), so tests/proxy.py's relay makes a
real Mosquitto behave like one: it drops (RabbitMQ 3.10) or delays (aedes) the retained
messages Mosquitto sends for a wildcard subscription, and passes everything else.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator

import pytest

from gates import transport
from gates.errors import UnsupportedBroker
from gates.protocol import deployment_topic
from gates.transport import BrokerAddress, check_retained_reads, connect, publish_all, read_retained
from orchestrator.cluster import DeploymentRecord
from orchestrator.compiler import compile_source
from orchestrator.deploy import find
from orchestrator.errors import BrokerError
from tests.processes import clean_env
from tests.proxy import RetainedToWildcards, relay

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test checks its brokers afresh (the check is remembered per process)."""
    monkeypatch.setattr(transport, "_serves_retained_reads", set())


async def test_mosquitto_and_amqtt_carry_the_control_plane_and_keep_no_probe(broker_url: str) -> None:
    broker = BrokerAddress.parse(broker_url)
    await check_retained_reads(broker)
    left = await read_retained(broker, [f"{transport.SYNC_ROOT}/#"])
    assert [name for name in left if name.endswith("/probe")] == []


@pytest.fixture
async def deployed(mosquitto_url: str) -> AsyncIterator[str]:
    """A deployment record retained on Mosquitto (no hosts needed to read it back); its name."""
    broker = BrokerAddress.parse(mosquitto_url)
    name = f"qf{secrets.token_hex(4)}"
    circuit = compile_source("q = x + y; f = q * z")
    record = DeploymentRecord(
        name=name,
        circuit_id=f"{name}.00000000",
        circuit=circuit,
        placement={gate.id: "h0" for gate in circuit.gates},
        hosts={"h0": "00000000"},
    )
    async with connect(broker) as mqtt:
        await publish_all(mqtt, [(deployment_topic(name), record)], retain=True)
    yield name
    async with connect(broker) as mqtt:
        await publish_all(mqtt, [(deployment_topic(name), None)], retain=True)


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("never", "never sent a retained message to a new wildcard subscription"),  # RabbitMQ 3.10
        ("late", "sent a retained message to a new wildcard subscription only after a message published later"),
    ],
)
async def test_a_broker_without_retained_wildcard_reads_is_named(
    mosquitto_url: str, deployed: str, behaviour: RetainedToWildcards, says: str
) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    async with relay(broker.host, broker.port, retained=behaviour) as link:
        behind = BrokerAddress(host="127.0.0.1", port=link.port)
        # what such a broker does to a read of the cluster: the record is there, the read is empty
        assert deployment_topic(deployed) in await read_retained(behind, [deployment_topic(deployed)])
        assert deployment_topic(deployed) not in await read_retained(behind, [deployment_topic("+")])
        assert deployment_topic(deployed) in link.withheld

        with pytest.raises(UnsupportedBroker, match=says):
            await check_retained_reads(behind)
        with pytest.raises(BrokerError, match=says):  # not "no deployment named ..."
            await find(deployed, behind)
        assert (await find(deployed, broker)).name == deployed  # Mosquitto itself has it


async def test_the_cli_names_what_the_broker_lacks(mosquitto_url: str, deployed: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    async with relay(broker.host, broker.port, retained="never") as link:
        url = f"mqtt://127.0.0.1:{link.port}"
        cli = ["-c", "from orchestrator.cli import main; main()"]
        run = ["run", "--deployed", deployed, "x=1", "y=2", "z=3", "--broker", url]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *cli, *run, stderr=asyncio.subprocess.PIPE, env=clean_env()
        )
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    assert process.returncode == 1
    assert "never sent a retained message to a new wildcard subscription" in stderr.decode()
    assert "RabbitMQ" in stderr.decode()
    assert "no deployment named" not in stderr.decode()
