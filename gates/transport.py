"""The control plane's way to the broker (aiomqtt): URL parsing, client settings, publishing,
reading retained state; and a gate's link when it has a connection of its own (gates/actor.py,
`--connections per-gate`). The rest of the data plane (a shared connection's gates, the runner,
the tap) speaks through its own session, gates/mqtt311.py; BrokerAddress is both planes'.

One helper, so that every aiomqtt connection gets the settings measured to matter: MQTT 3.1.1
(the embedded broker has no MQTT 5) and TCP_NODELAY, without which a QoS 1 hop costs ~44 ms of
Nagle and delayed-ACK waiting instead of ~0.3 ms (the data plane's asyncio transports set it
themselves).

And one boundary: aiomqtt's errors (and timeouts) leave this module only as gatemesh's own
(gates/errors.py), mapped by `map_exceptions` in `connect`, `incoming`, `publish_all`,
`subscribe_all` and `read_retained`; no other module catches an aiomqtt error.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from aiomqtt.types import PahoSocket
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field

from gates.errors import (
    ConnectionLost,
    SubscriptionRefused,
    TransportError,
    UnsupportedBroker,
    connack_refusal,
    unreachable,
)

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
"""Where a gate host and the cluster commands look for the broker when told nothing."""
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
            msg = f"broker URL {url!r}: scheme must be mqtt:// or mqtts://"
            raise ValueError(msg)
        if not parts.hostname:
            msg = f"broker URL {url!r} names no host"
            raise ValueError(msg)
        try:
            port = parts.port
        except ValueError as exc:
            msg = f"broker URL {url!r}: {exc}"
            raise ValueError(msg) from exc
        tls = parts.scheme == "mqtts"
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca"}
        if unknown:
            msg = f"broker URL {url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; only ca="
            raise ValueError(msg)
        ca_file = query.get("ca", [None])[-1]
        if ca_file is not None and not tls:
            msg = f"broker URL {url!r}: ca= applies to mqtts:// only"
            raise ValueError(msg)
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

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for an mqtts:// broker (None for mqtt://). ValueError names a CA file
        that cannot be read: the commands call it before they connect, to say so in one line."""
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError as exc:
            msg = f"broker {self}: ca={self.ca_file}: not a PEM certificate file ({exc.reason})"
            raise ValueError(msg) from exc
        except OSError as exc:
            msg = f"broker {self}: ca={self.ca_file}: {exc.strerror or exc}"
            raise ValueError(msg) from exc


class Client(aiomqtt.Client):
    """aiomqtt's client, safe to cancel while it connects (aiomqtt issue #377, open in 2.5).

    A connection cancelled half-made (a run's record watch, when the run fails at once on a
    lost host) left its reader and its "misc" task behind, and paho's socket to be closed when
    collected: after the event loop had closed, a third of such runs ended in "Event loop is
    closed" tracebacks and "Task was destroyed but it is pending!". A connect that failed
    (no CONNACK in time) left the same. Here a connect that did not succeed is abandoned:
    what paho's connecting thread set up is taken down on the loop once that thread has
    returned (its callbacks to the loop come before), and nothing more is set up. A client
    abandoned is not entered again (`client()` makes one per connection)."""

    _abandoned = False
    _returned = False
    """paho's connecting thread has returned, and every callback it sent the loop has run."""

    async def __aenter__(self) -> Self:
        try:
            return await super().__aenter__()
        except BaseException:
            self._abandoned = True
            if self._returned:
                self._take_down()
            raise

    def _client_connect(self) -> None:
        try:
            super()._client_connect()
        finally:  # (paho's thread) after every callback it sent the loop
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._connect_returned)

    def _connect_returned(self) -> None:
        self._returned = True
        if self._abandoned:
            self._take_down()

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: PahoSocket) -> None:
        if not self._abandoned:  # (paho's thread) a connection already given up needs no reader
            super()._on_socket_open(client, userdata, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: PahoSocket) -> None:
        if not self._abandoned:  # (paho's thread, sending its CONNECT) nor a writer
            super()._on_socket_register_write(client, userdata, sock)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: PahoSocket) -> None:
        if not self._abandoned:
            super()._on_socket_unregister_write(client, userdata, sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: PahoSocket) -> None:
        if not self._loop.is_closed():  # paho closes its socket as it is collected: maybe after the loop
            super()._on_socket_close(client, userdata, sock)

    def _take_down(self) -> None:
        if self._misc_task is not None:
            self._misc_task.cancel()
        sock = self._client.socket()
        if sock is not None and sock.fileno() >= 0:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()


def client(
    broker: BrokerAddress,
    *,
    identifier: str | None = None,
    will: aiomqtt.Will | None = None,
    keepalive: int = 60,
    timeout: float = 10.0,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client with the project's settings; enter it to connect."""
    mqtt = Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=will,
        keepalive=keepalive,
        timeout=timeout,
        tls_context=broker.tls_context(),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=IN_FLIGHT,
    )
    # publish_all keeps at most IN_FLIGHT publishes awaiting a PUBACK; aiomqtt warns past 10 calls by default
    mqtt.pending_calls_threshold = 10 * IN_FLIGHT  # subscriptions in flight count too
    return mqtt


@contextlib.contextmanager
def map_exceptions(broker: BrokerAddress | None = None) -> Iterator[None]:
    """Inside the block, aiomqtt's errors and timeouts become TransportErrors (httpx's pattern).

    A refused CONNECT is Refused; any other aiomqtt error (no connection, a broken one, an
    operation that timed out) and a TimeoutError are ConnectionLost.
    """
    where = f"the broker at {broker}" if broker is not None else "the broker"
    named = str(broker) if broker is not None else None
    try:
        yield
    except MqttConnectError as exc:
        _go_on_cancelling(exc)
        msg = f"{where} refused the connection: {exc}"
        raise connack_refusal(msg, exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc, named) from exc
    except aiomqtt.MqttError as exc:
        _go_on_cancelling(exc)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConnectionRefusedError | socket.gaierror):  # connecting: said as the session says it
            msg = f"cannot connect to {where}: {unreachable(cause)}"
        elif isinstance(cause, ConnectionResetError):
            msg = f"{where}: {unreachable(cause)}"
        elif "timed out" in str(exc):
            msg = f"{where}: {exc}{_tls_hint(broker)}"
        else:
            msg = f"{where}: {exc}"
        raise ConnectionLost(msg, broker=named) from exc
    except TimeoutError as exc:
        _go_on_cancelling(exc)
        msg = f"{where} did not answer in time{_tls_hint(broker)}"
        raise ConnectionLost(msg, broker=named) from exc


def _tls_hint(broker: BrokerAddress | None) -> str:
    """Why a plain broker address may get no answer: a host down or filtered, or a TLS listener
    (it waits for a TLS hello)."""
    if broker is None or broker.tls:
        return ""
    return (
        "; the host may be down or filtered, or the port speaks TLS, which never answers mqtt:// "
        "(is the scheme the port's?)"
    )


def _go_on_cancelling(exc: BaseException | None) -> None:
    """CancelledError if this task is being cancelled (`exc`: the error it stands in for). aiomqtt
    can lose a cancellation: its `__aexit__` turns an unanswered DISCONNECT into MqttError, which a
    reconnecting loop would catch as a TransportError, and see `incoming` for Python 3.11's
    `wait_for` (a room's cluster watch went on for good after its room closed)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


@contextlib.asynccontextmanager
async def connect(
    broker: BrokerAddress,
    *,
    identifier: str | None = None,
    will: aiomqtt.Will | None = None,
    keepalive: int = 60,
    timeout: float = 10.0,
) -> AsyncIterator[aiomqtt.Client]:
    """A connected client (see `client`); an aiomqtt error anywhere in the block leaves it as a TransportError."""
    with map_exceptions(broker):
        async with client(broker, identifier=identifier, will=will, keepalive=keepalive, timeout=timeout) as mqtt:
            yield mqtt


async def incoming(mqtt: aiomqtt.Client) -> AsyncGenerator[tuple[str, bytes], None]:
    """Every message the client receives, as (topic, payload); ConnectionLost when the connection ends.

    CancelledError first if the task is being cancelled: Python 3.11's `asyncio.wait_for`, which
    aiomqtt awaits to connect and subscribe, returns its future's result instead of raising when
    the cancellation comes as the future completes (CPython gh-86296, fixed in 3.12); the loop
    would then read messages for good (a closed room's cluster watch did)."""
    _go_on_cancelling(None)
    async with contextlib.aclosing(_messages(mqtt)) as messages:
        async for message in messages:
            yield message.topic.value, _payload(message)


async def _messages(mqtt: aiomqtt.Client) -> AsyncGenerator[aiomqtt.Message, None]:
    with map_exceptions():
        async for message in mqtt.messages:
            yield message
    msg = "the broker connection's message stream ended"
    raise ConnectionLost(msg)


def _payload(message: aiomqtt.Message) -> bytes:
    raw = message.payload
    return bytes(raw) if isinstance(raw, bytes | bytearray) else b""


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
        await _publish_one(mqtt, window, *batch[0], retain)
        return
    try:
        async with asyncio.TaskGroup() as group:
            for name, payload in batch:
                group.create_task(_publish_one(mqtt, window, name, payload, retain))
    except BaseExceptionGroup as failed:  # one TransportError for the caller, not a group
        lost = next((exc for exc in failed.exceptions if isinstance(exc, TransportError)), None)
        if lost is None:
            raise
        raise lost from failed


async def _publish_one(
    mqtt: aiomqtt.Client, window: asyncio.Semaphore, name: str, payload: bytes, retain: bool
) -> None:
    with map_exceptions():
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
    with map_exceptions():
        granted = await mqtt.subscribe([(name, QOS) for name in wanted])
    check_granted(wanted, [code.value if isinstance(code, ReasonCode) else code for code in granted])


def check_granted(filters: list[str], codes: Sequence[int]) -> None:
    """Refused naming every filter a SUBACK refused (a code of 0x80 or more, MQTT 3.1.1 and 5 alike)."""
    refused = [name for name, code in zip(filters, codes, strict=False) if code >= 0x80]
    if len(codes) != len(filters):  # which code is whose cannot be told
        refused = filters
    if refused:
        msg = f"the broker refused the subscription(s) {', '.join(refused)}"
        raise SubscriptionRefused(msg, tuple(refused))


async def read_retained(broker: BrokerAddress, filters: Iterable[str], *, timeout: float = 10.0) -> dict[str, bytes]:
    """Every retained message under `filters`, by topic, read on a short-lived connection.

    MQTT has no "end of retained messages" signal, so this sends itself a marker after
    subscribing: the broker handles one connection's packets in order, so the retained
    messages it queued for the subscription are delivered before the marker comes back.
    Not every broker does (see `check_retained_reads`).
    Only copies flagged retained count: a live message published meanwhile is not the state.
    """
    with map_exceptions(broker):
        async with asyncio.timeout(timeout), client(broker, timeout=timeout) as mqtt:
            found = await _read_until_marker(mqtt, list(filters))
    _go_on_cancelling(None)  # aiomqtt can also end a cancelled read as if nothing had happened
    return found


async def read_retained_until(
    broker: BrokerAddress,
    filters: Iterable[str],
    complete: Callable[[dict[str, bytes]], bool],
    *,
    timeout: float = 10.0,
) -> dict[str, bytes]:
    """Retained messages under `filters`, read until `complete(found)` holds (TimeoutError if it
    never does): for a reader that knows what to expect and may not publish the marker
    `read_retained` needs (the read-only watcher account)."""
    found: dict[str, bytes] = {}
    with map_exceptions(broker):
        async with asyncio.timeout(timeout), client(broker, timeout=timeout) as mqtt:
            await subscribe_all(mqtt, list(filters))
            async with contextlib.aclosing(_messages(mqtt)) as messages:
                async for message in messages:
                    if not message.retain:
                        continue
                    payload = _payload(message)
                    if payload:
                        found[message.topic.value] = payload
                    else:
                        found.pop(message.topic.value, None)
                    if complete(found):
                        break
                else:
                    msg = "unreachable: incoming() ends only by raising"
                    raise AssertionError(msg)  # pragma: no cover
    _go_on_cancelling(None)  # as in read_retained
    return found


async def _read_until_marker(mqtt: aiomqtt.Client, filters: list[str]) -> dict[str, bytes]:
    marker = f"{SYNC_ROOT}/{secrets.token_hex(8)}"
    found: dict[str, bytes] = {}
    await subscribe_all(mqtt, [*filters, marker])
    await mqtt.publish(marker, b"sync", qos=QOS)
    async with contextlib.aclosing(_messages(mqtt)) as messages:
        async for message in messages:
            name = message.topic.value
            if name == marker:
                return found
            if not message.retain:  # live, not the broker's retained copy (junk, say)
                continue
            payload = _payload(message)
            if payload:
                found[name] = payload
            else:
                found.pop(name, None)
    msg = "unreachable: incoming() ends only by raising"
    raise AssertionError(msg)  # pragma: no cover


LATE_RETAINED = 1.0
"""Seconds `check_retained_reads` waits after the marker to tell a late retained message from none."""


async def check_retained_reads(broker: BrokerAddress, *, timeout: float = 10.0) -> None:
    """UnsupportedBroker unless the broker serves `read_retained`: a retained message must reach a
    new wildcard subscription before a message published after the subscription does.

    Checked with a retained probe under SYNC_ROOT, read back through a wildcard, then deleted;
    once per broker and process. Brokers that fail: RabbitMQ 3.10's MQTT plugin (it never sends
    retained messages to wildcard subscriptions) and aedes (it sends them after the SUBACK).
    """
    if broker in _serves_retained_reads:
        return
    root = f"{SYNC_ROOT}/{secrets.token_hex(8)}"
    probe = f"{root}/probe"
    with map_exceptions(broker):
        async with asyncio.timeout(timeout + LATE_RETAINED), client(broker, timeout=timeout) as mqtt:
            await mqtt.publish(probe, b"probe", qos=QOS, retain=True)
            try:
                if probe in await _read_until_marker(mqtt, [f"{root}/+"]):
                    _serves_retained_reads.add(broker)
                    return
                late = await _heard(mqtt, probe, LATE_RETAINED)
            finally:
                await mqtt.publish(probe, b"", qos=QOS, retain=True)
    lacks = (
        "sent a retained message to a new wildcard subscription only after a message published later"
        if late
        else "never sent a retained message to a new wildcard subscription"
    )
    msg = (
        f"the broker at {broker} {lacks}, so gatemesh cannot read its hosts, deployments and assignments "
        "(retained messages read through wildcards, in order). RabbitMQ's MQTT plugin and aedes behave so; "
        "use Mosquitto 2 or amqtt (`python -m broker mosquitto`, or `python -m broker embedded`)"
    )
    raise UnsupportedBroker(msg, broker=str(broker))


async def _heard(mqtt: aiomqtt.Client, name: str, seconds: float) -> bool:
    """Whether a message on `name` arrives within `seconds`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), contextlib.aclosing(incoming(mqtt)) as messages:
            async for heard, _ in messages:
                if heard == name:
                    return True
    return False


_serves_retained_reads: set[BrokerAddress] = set()
"""Brokers that passed check_retained_reads in this process."""

SYNC_ROOT = "gatemesh-sys/sync"
