"""How every gatemesh component reaches the broker: URL parsing, client settings, publishing.

One helper, so that every connection gets the settings measured to matter: MQTT 3.1.1 (the
embedded broker has no MQTT 5) and TCP_NODELAY, without which a QoS 1 hop costs ~44 ms of
Nagle and delayed-ACK waiting instead of ~0.3 ms.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import weakref
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field

QOS = 1
"""Every gate message is sent at least once; duplicates are harmless by design."""
IN_FLIGHT = 100
"""Publishes per connection awaiting their PUBACK at once (see publish_all)."""


class BrokerAddress(BaseModel):
    """Where the broker is: parsed from `mqtt://host:port` or `mqtts://host:port`."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    """For mqtts://: the CA that signed the broker's certificate (`?ca=/path/ca.pem`); default: the system's."""

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} names no host")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"broker URL {url!r}: {exc}") from exc
        tls = parts.scheme == "mqtts"
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca"}
        if unknown:
            raise ValueError(f"broker URL {url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; only ca=")
        ca_file = query.get("ca", [None])[-1]
        if ca_file is not None and not tls:
            raise ValueError(f"broker URL {url!r}: ca= applies to mqtts:// only")
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_file,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def client(
    broker: BrokerAddress,
    *,
    identifier: str | None = None,
    will: aiomqtt.Will | None = None,
    keepalive: int = 60,
    timeout: float = 10.0,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client with the project's settings; enter it to connect."""
    mqtt = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=will,
        keepalive=keepalive,
        timeout=timeout,
        tls_context=ssl.create_default_context(cafile=broker.ca_file) if broker.tls else None,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=IN_FLIGHT,
    )
    # publish_all keeps at most IN_FLIGHT publishes awaiting a PUBACK; aiomqtt warns past 10 calls by default
    mqtt.pending_calls_threshold = 10 * IN_FLIGHT  # subscriptions in flight count too
    return mqtt


def encode(message: BaseModel | None) -> bytes:
    """A message's payload; None is the empty payload, which deletes a retained message."""
    return b"" if message is None else message.model_dump_json().encode()


async def publish_all(
    mqtt: aiomqtt.Client, messages: Iterable[tuple[str, BaseModel | None]], *, retain: bool = False
) -> None:
    """Publish a batch at QoS 1 concurrently, so one slow acknowledgement does not queue the rest."""
    batch = [(name, encode(message)) for name, message in messages]
    window = _windows.get(mqtt)
    if window is None:
        window = _windows[mqtt] = asyncio.Semaphore(IN_FLIGHT)
    if len(batch) == 1:
        async with window:
            await mqtt.publish(batch[0][0], batch[0][1], qos=QOS, retain=retain)
        return
    async with asyncio.TaskGroup() as group:
        for name, payload in batch:
            group.create_task(_publish_one(mqtt, window, name, payload, retain))


async def _publish_one(
    mqtt: aiomqtt.Client, window: asyncio.Semaphore, name: str, payload: bytes, retain: bool
) -> None:
    async with window:
        await mqtt.publish(name, payload, qos=QOS, retain=retain)


_windows: weakref.WeakKeyDictionary[aiomqtt.Client, asyncio.Semaphore] = weakref.WeakKeyDictionary()
"""Per connection, the publishes awaiting their PUBACK. The bound matters: paho scans every
unacknowledged message on each acknowledgement, so an unbounded backlog makes a burst quadratic."""


async def subscribe_all(mqtt: aiomqtt.Client, filters: Iterable[str]) -> None:
    """Subscribe at QoS 1 and make sure the broker granted every filter.

    A broker that refuses a subscription (an ACL, say) still answers SUBACK, with the failure
    code 0x80: without this check a gate would say Ready and then never hear a thing.
    """
    wanted = list(filters)
    granted = await mqtt.subscribe([(name, QOS) for name in wanted])
    check_granted(wanted, [code.value if isinstance(code, ReasonCode) else code for code in granted])


def check_granted(filters: list[str], codes: Sequence[int]) -> None:
    """MqttError naming every filter a SUBACK refused (a code of 0x80 or more, MQTT 3.1.1 and 5 alike)."""
    refused = [name for name, code in zip(filters, codes, strict=False) if code >= 0x80]
    if refused or len(codes) != len(filters):
        raise aiomqtt.MqttError(f"the broker refused the subscription(s) {', '.join(refused or filters)}")


async def read_retained(broker: BrokerAddress, filters: Iterable[str], *, timeout: float = 10.0) -> dict[str, bytes]:
    """Every retained message under `filters`, by topic, read on a short-lived connection.

    MQTT has no "end of retained messages" signal, so this sends itself a marker after
    subscribing: the broker handles one connection's packets in order, so the retained
    messages it queued for the subscription are delivered before the marker comes back.
    Only copies flagged retained count: a live message published meanwhile is not the state.
    """
    marker = f"{SYNC_ROOT}/{secrets.token_hex(8)}"
    found: dict[str, bytes] = {}
    async with asyncio.timeout(timeout), client(broker, timeout=timeout) as mqtt:
        await subscribe_all(mqtt, [*filters, marker])
        await mqtt.publish(marker, b"sync", qos=QOS)
        async for message in mqtt.messages:
            name = message.topic.value
            if name == marker:
                return found
            if not message.retain:  # live, not the broker's retained copy (junk, say)
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if payload:
                found[name] = payload
            else:
                found.pop(name, None)
    raise aiomqtt.MqttError("the connection closed before the retained messages were read")


SYNC_ROOT = "gatemesh-sys/sync"
