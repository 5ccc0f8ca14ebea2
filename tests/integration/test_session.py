"""gates/mqtt311.Session and the shared connection over it, against real brokers and a real relay."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal

import pytest

from broker.launch import free_port, mosquitto_process
from gates.errors import ConnectionLost
from gates.mqtt311 import QoS, Session
from gates.mux import SharedConnection
from gates.protocol import Ready
from gates.transport import BrokerAddress
from orchestrator.tap import Tap, Tapped, TapStream
from tests.proxy import relay


class Inbox:
    """Collects what a Session receives; `wait_for(n)` returns once n payloads have arrived."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.payloads) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.mark.parametrize("qos", [0, 1])
async def test_publishes_arrive_once_each_and_in_order(broker_url: str, qos: QoS) -> None:
    broker = BrokerAddress.parse(broker_url)
    name = f"test/session/{secrets.token_hex(4)}"
    inbox = Inbox()
    reader = await Session.open(broker, inbox, qos=qos)
    writer = await Session.open(broker, lambda topic, payload: None, qos=qos)
    try:
        await reader.subscribe([name])
        sent = [f"message {i}".encode() for i in range(2000)]  # more than IN_FLIGHT: the backlog is used too
        for payload in sent:
            writer.publish(name, payload)
        await inbox.wait_for(len(sent), timeout=20)
        await asyncio.sleep(0.2)  # and nothing more arrives
        assert inbox.payloads == sent
        assert writer.undelivered() == []  # every QoS 1 publish acknowledged (at QoS 0 none is tracked)
    finally:
        reader.close()
        writer.close()


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    said = f"cannot connect to the broker at mqtt://127.0.0.1:{port}: nothing is listening there (connection refused)"
    with pytest.raises(ConnectionLost, match=re.escape(said)):
        await Session.open(BrokerAddress(host="127.0.0.1", port=port), lambda topic, payload: None)


async def test_a_silent_link_is_declared_dead_by_the_keepalive(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    async with relay(broker.host, broker.port) as link:
        session = await Session.open(BrokerAddress(host="127.0.0.1", port=link.port), lambda t, p: None, keepalive=0.3)
        link.silent = True  # nothing flows and nothing closes, as when a cable is pulled
        async with asyncio.timeout(3):
            error = await session.lost
        assert "no PINGRESP" in str(error)


async def test_the_shared_connection_resends_what_the_broker_never_acknowledged(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    name = f"test/shared/{secrets.token_hex(4)}"
    inbox = Inbox()
    listener = await Session.open(broker, inbox)
    await listener.subscribe([name])
    try:
        async with relay(broker.host, broker.port) as link, asyncio.TaskGroup() as group:
            shared = SharedConnection(BrokerAddress(host="127.0.0.1", port=link.port))
            started = asyncio.get_running_loop().create_future()
            serving = group.create_task(shared.serve(started))
            async with asyncio.timeout(10):
                await started
            link.silent = True
            messages = [Ready(circuit="resend", sender=f"g{i}") for i in range(50)]
            await shared.publish([(name, message) for message in messages])
            await asyncio.sleep(0.3)
            assert inbox.payloads == []  # the broker never saw them...
            assert len(shared.session.undelivered()) == 50  # ...and the connection knows it
            link.silent = False
            link.cut()  # the connection drops; the shared connection reconnects and sends them again
            await inbox.wait_for(50, timeout=10)
            assert sorted(inbox.payloads) == sorted(m.model_dump_json().encode() for m in messages)
            serving.cancel()
    finally:
        listener.close()


async def test_a_tap_keeps_every_byte_and_frames_the_messages_again(broker_url: str) -> None:
    """The recorder's tap (orchestrator/tap.py): a QoS 0 subscriber that captures its reads raw.
    What it hears, framed later, is every message published, in order, byte for byte: a 300 KB
    one spans many reads, and a ping's answer in the stream is skipped."""
    broker = BrokerAddress.parse(broker_url)
    deployment = f"tap-{secrets.token_hex(4)}"
    reads: list[Tapped] = []
    early: list[tuple[str, bytes]] = []
    tap = Tap(broker, deployment, reads.append, lambda name, payload: early.append((name, payload)))
    sent = [(f"gatemesh/{deployment}/fwd/g{i}", secrets.token_bytes(10 + i**5)) for i in range(13)]
    sent.append((f"gatemesh/{deployment}/grad/big", secrets.token_bytes(300_000)))
    publisher = await Session.open(broker, Inbox())
    async with asyncio.TaskGroup() as group:
        started = asyncio.get_running_loop().create_future()
        holding = group.create_task(tap.hold(started))
        await started
        for name, payload in sent:
            publisher.publish(name, payload)
        await asyncio.sleep(2.5)  # a ping and its answer, read raw too
        publisher.publish(*sent[0])
        stream = TapStream()
        heard = early  # what came in the SUBACK's read, parsed by the session (usually nothing)
        async with asyncio.timeout(10):
            while len(heard) < len(sent) + 1:
                await asyncio.sleep(0.05)
                taken, reads[:] = list(reads), []
                heard += [(name, payload) for tapped in taken for _, name, payload in stream.read(tapped)]
        holding.cancel()
    publisher.close()
    assert heard == [*sent, sent[0]]


async def test_a_gate_cancelled_while_it_subscribes_for_the_others_leaves_them_subscribed() -> None:
    """On a shared connection the first gate to attach sends every waiting SUBSCRIBE, and the
    others wait for its acknowledgements. Cancelled meanwhile (its host undeploys it), it took
    its batch and the topics asked for later with it: the other gate never said Ready, until a
    reconnection. The broker is paused (SIGSTOP) so that the SUBSCRIBE waits for it."""
    with mosquitto_process() as (url, broker):
        shared = SharedConnection(BrokerAddress.parse(url))
        ready = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def gate(name: str) -> None:
            async with shared.link(["gatemesh/d/control", f"gatemesh/d/fwd/{name}"]):
                ready[name].set()
                await asyncio.Event().wait()  # a gate serves until it is undeployed

        async with asyncio.TaskGroup() as group:
            started = asyncio.get_running_loop().create_future()
            serving = group.create_task(shared.serve(started))
            async with asyncio.timeout(10):
                await started
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                first = group.create_task(gate("a"))
                await asyncio.sleep(0.2)  # its SUBSCRIBE waits for the paused broker
                second = group.create_task(gate("b"))
                await asyncio.sleep(0.2)
                first.cancel()
                await asyncio.sleep(0.2)
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            async with asyncio.timeout(5):
                await ready["b"].wait()
            assert first.cancelled()
            assert not ready["a"].is_set()
            second.cancel()
            serving.cancel()
