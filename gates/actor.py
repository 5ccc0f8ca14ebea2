"""One gate = one asyncio actor, over a Link: a connection of its own, or a mailbox on a
connection its host shares among its gates (gates/mux.py; a host's default).

The actor subscribes to the topics its GateCore names, says Ready only once the broker has
acknowledged those subscriptions (so nothing sent to it afterwards can be missed), and then
loops: one message in, the core decides, the results go out. It never sees the circuit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import NoReturn, Protocol

import aiomqtt
from pydantic import BaseModel

from gates.core import GateCore
from gates.errors import ConnectionLost, Refused, TransportError
from gates.faults import FaultInjector, Faults, Planned
from gates.held import HeldLink
from gates.lifecycle import Backoff, first_failure
from gates.protocol import RUN_FAILING_CODES, ErrorReport, GateSpec, Message
from gates.tracing import GateTracer
from gates.transport import BrokerAddress, connect, incoming, publish_all, subscribe_all

log = logging.getLogger(__name__)


class Link(Protocol):
    """How an actor reaches the broker: a connection of its own, or a mailbox on a shared one."""

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]: ...

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False, later: bool = False) -> None:
        """`later`: nobody waits for the batch (a step's trace events); a link may send it with
        its next write instead of one of its own."""


class OwnConnection:
    """A link that is one MQTT connection for one gate: what the notes draw, one wire per gate."""

    def __init__(self, mqtt: aiomqtt.Client) -> None:
        self.mqtt = mqtt

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        return incoming(self.mqtt)

    async def publish(self, batch: list[tuple[str, BaseModel]], *, retain: bool = False, later: bool = False) -> None:
        await publish_all(self.mqtt, batch, retain=retain)  # paho writes each publish at once: nothing to wait for


LinkOpener = Callable[[list[str]], contextlib.AbstractAsyncContextManager[Link]]
"""Opens a link subscribed to `topics`; the subscriptions are acknowledged on entry."""


def own_connections(broker: BrokerAddress) -> LinkOpener:
    """Each gate gets its own connection to `broker`."""

    @contextlib.asynccontextmanager
    async def open_link(topics: list[str]) -> AsyncIterator[Link]:
        async with connect(broker) as mqtt:
            await subscribe_all(mqtt, topics)
            yield OwnConnection(mqtt)

    return open_link


class GateActor:
    """Runs one GateCore against the broker until cancelled.

    `serve` may be called again after the connection is lost: the core, and with it every
    run in flight, survives the reconnection. A hosted gate retains its Ready message, so
    an orchestrator that starts later can still see that the gate is up. `broker` is either
    an address (the gate opens its own connection) or a LinkOpener (e.g. a SharedConnection's).
    """

    __slots__ = ("core", "host", "injector", "open_link", "retain_ready", "tracer")  # no per-instance dict: memory

    def __init__(
        self,
        spec: GateSpec,
        circuit: str,
        broker: BrokerAddress | LinkOpener,
        *,
        retain_ready: bool = False,
        faults: Faults | None = None,
        host: str = "local",
    ) -> None:
        self.core = GateCore(spec, circuit)
        self.host = host
        """Where this gate runs, as its trace events say."""
        self.tracer: GateTracer | None = None
        """Made when the gate first takes part in a traced run (gates/tracing.py)."""
        self.open_link = own_connections(broker) if isinstance(broker, BrokerAddress) else broker
        self.retain_ready = retain_ready
        self.injector = FaultInjector(faults, gate=spec.id) if faults and faults.active else None

    async def serve(self) -> NoReturn:
        """Connect, subscribe, announce readiness, then handle messages forever.

        Raises a TransportError when the connection is lost (never an exception group), so
        a caller can reconnect by calling serve again.
        """
        try:
            await self._serve()
        except BaseExceptionGroup as group:
            raise first_failure(group) from group

    async def serve_forever(self) -> NoReturn:
        """serve(), reconnecting with back-off whenever the connection is lost; the core's state survives."""
        backoff = Backoff()
        while True:
            try:
                await self._serve()  # not serve(): one coroutine frame less per idle gate
            except (TransportError, BaseExceptionGroup) as exc:
                lost = first_failure(exc) if isinstance(exc, BaseExceptionGroup) else exc
                if not isinstance(lost, TransportError):
                    raise lost from exc
                level, what = (
                    (logging.WARNING, "refused") if isinstance(lost, Refused) else (logging.INFO, "connection lost")
                )
                log.log(level, "gate %s/%s: %s (%s); reconnecting", self.core.circuit, self.core.spec.id, what, lost)
                await asyncio.sleep(backoff.next())

    async def _serve(self) -> NoReturn:
        async with self.open_link(self.core.subscriptions()) as link:
            await self._announce(link)
            if self.injector is None:
                async for topic_name, payload in link.incoming():
                    await self._handle(link, None, topic_name, payload)
            else:
                async with asyncio.TaskGroup() as delayed:  # for publishes the injector delays
                    async for topic_name, payload in link.incoming():
                        await self._handle(link, delayed, topic_name, payload)
        raise ConnectionLost(f"gate {self.core.spec.id}: message stream ended")

    async def _announce(self, link: Link) -> None:
        ready = self.core.ready()
        await link.publish([(ready.topic, ready.message)], retain=self.retain_ready)

    async def _handle(self, link: Link, delayed: asyncio.TaskGroup | None, topic_name: str, payload: bytes) -> None:
        """One message in, its results out. A method of its own so that nothing of the message
        stays referenced while the gate waits for the next one (memory, at 65,000 idle gates)."""
        try:
            message, outgoing = self.core.receive(topic_name, payload)
        except Exception:  # a defect in the gate's own code: logged with its traceback; the gate serves on
            log.exception("gate %s: could not handle a message on %s", self.core.spec.id, topic_name)
            return
        for out in outgoing:
            if isinstance(out.message, ErrorReport):
                level = logging.INFO if out.message.code in RUN_FAILING_CODES else logging.WARNING
                where = out.message.topic or topic_name
                log.log(level, "gate %s: %s on %s: %s", self.core.spec.id, out.message.code, where, out.message.message)
        batch = [(out.topic, out.message) for out in outgoing]
        if message is None:  # rejected: its error report goes as it is
            if batch:
                await self._send(link, delayed, batch)
            return
        if message.held:  # step mode: this run's data messages wait at the held topics (gates/held.py)
            link = HeldLink(link)
        if message.clock is not None:  # a traced run: clocks on its messages, events to the trace topic
            await self._send_traced(link, delayed, topic_name, message, batch)
        elif batch:
            await self._send(link, delayed, batch)

    async def _send(self, link: Link, delayed: asyncio.TaskGroup | None, batch: list[tuple[str, BaseModel]]) -> None:
        if self.injector is None or delayed is None:  # one implies the other; both checked for the type checker
            await link.publish(batch)
            return
        await self._publish_planned(link, delayed, self.injector.plan(batch))

    async def _send_traced(
        self,
        link: Link,
        delayed: asyncio.TaskGroup | None,
        topic_name: str,
        message: Message,
        batch: list[tuple[str, BaseModel]],
    ) -> None:
        """Stamp the step's messages and publish them, then the step's events (see gates/tracing.py)."""
        if self.tracer is None:
            spec = self.core.spec
            every_step = self.injector is not None  # its faults stretch or stall a run: tell as it goes
            self.tracer = GateTracer(
                spec.id, spec.index, spec.inputs, self.core.circuit, self.host, every_step=every_step
            )
        tracer = self.tracer
        run, batch, facts = tracer.step(topic_name, message, batch)
        if run is None:
            if batch:
                await self._send(link, delayed, batch)
            return
        if self.injector is None or delayed is None:
            if batch:
                await link.publish(batch)
        else:
            planned = self.injector.plan(batch)
            facts += tracer.faults(run, batch, [(copy.delay, copy.message) for copy in planned])
            await self._publish_planned(link, delayed, planned)
        if tracer.flushes(run):
            # the step's messages go out in this loop turn's write; the events are encoded
            # and sent after it, while the broker carries the messages on (the pass does not wait)
            await asyncio.sleep(0)
        if trace := tracer.batch(run, facts):  # often nothing: a gate waiting for more inputs
            await link.publish(trace, later=True)

    async def _publish_planned(self, link: Link, delayed: asyncio.TaskGroup, planned: list[Planned[BaseModel]]) -> None:
        for copy in planned:
            if copy.delay > 0:
                delayed.create_task(_publish_later(link, copy.delay, copy.topic, copy.message))
            else:
                await link.publish([(copy.topic, copy.message)])


async def _publish_later(link: Link, delay: float, topic: str, message: BaseModel) -> None:
    await asyncio.sleep(delay)
    await link.publish([(topic, message)])
