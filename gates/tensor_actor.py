"""A tensor gate or a parameter as an asyncio actor on a shared MQTT connection.

The same loop as gates/actor.py: subscribe (every subscription acknowledged), say Ready, then
one message in, the core decides, its frames go out. Tensor gates speak binary frames, so
they publish encoded payloads on a SharedConnection (gates/mux.py): the host's, or, given a
broker address, one of the gate's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

from pydantic import ValidationError

from gates.errors import TransportError
from gates.faults import FaultInjector, Faults
from gates.lifecycle import Backoff, first_failure
from gates.mux import SharedConnection
from gates.param import ParamCore
from gates.protocol import RUN_FAILING_CODES, ErrorReport
from gates.tensor_core import Outgoing, TensorCore
from gates.tensor_protocol import TensorSpec
from gates.transport import BrokerAddress

log = logging.getLogger(__name__)


class TensorActor:
    """Runs one TensorCore or ParamCore against the broker until cancelled; its state survives
    reconnections (the shared connection resubscribes and resends on its own)."""

    def __init__(
        self,
        spec: TensorSpec,
        circuit: str,
        connection: SharedConnection | BrokerAddress,
        *,
        retain_ready: bool = False,
        faults: Faults | None = None,
    ) -> None:
        self.core: TensorCore | ParamCore = (
            ParamCore(spec, circuit) if spec.op == "param" else TensorCore(spec, circuit)
        )
        self.connection = connection
        self.retain_ready = retain_ready
        self.injector = FaultInjector(faults, gate=spec.id) if faults and faults.active else None

    async def serve_forever(self) -> NoReturn:
        if isinstance(self.connection, SharedConnection):
            await self._serve_reconnecting(self.connection)
        own = SharedConnection(self.connection)
        async with asyncio.TaskGroup() as group:
            group.create_task(own.serve())
            await self._serve_reconnecting(own)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _serve_reconnecting(self, shared: SharedConnection) -> NoReturn:
        backoff = Backoff()
        while True:
            try:
                await self._serve(shared)
            except (TransportError, BaseExceptionGroup) as exc:
                failure = first_failure(exc) if isinstance(exc, BaseExceptionGroup) else exc
                if not isinstance(failure, TransportError):
                    raise failure from exc
                log.info("tensor gate %s/%s: %s; subscribing again", self.core.circuit, self.core.spec.id, failure)
                await asyncio.sleep(backoff.next())

    async def _serve(self, shared: SharedConnection) -> NoReturn:
        async with shared.link(self.core.subscriptions()) as box:
            await shared.publish_raw([self.core.ready()], retain=self.retain_ready)
            if self.injector is None:
                async for topic_name, payload in box.incoming():
                    await self._send(shared, None, self._handle(topic_name, payload))
            else:
                async with asyncio.TaskGroup() as delayed:
                    async for topic_name, payload in box.incoming():
                        await self._send(shared, delayed, self._handle(topic_name, payload))
        raise TransportError(f"tensor gate {self.core.spec.id}: message stream ended")

    def _handle(self, topic_name: str, payload: bytes) -> list[Outgoing]:
        outgoing = self.core.handle(topic_name, payload)
        for name, body in outgoing:
            if "/error/" in name:
                _log_error(self.core.spec.id, body)
        return outgoing

    async def _send(self, shared: SharedConnection, delayed: asyncio.TaskGroup | None, batch: list[Outgoing]) -> None:
        if not batch:
            return
        if self.injector is None or delayed is None:
            await shared.publish_raw(batch)
            return
        for copy in self.injector.plan(batch):
            if copy.delay > 0:
                delayed.create_task(_publish_later(shared, copy.delay, copy.topic, copy.message))
            else:
                await shared.publish_raw([(copy.topic, copy.message)])


async def _publish_later(shared: SharedConnection, delay: float, topic: str, payload: bytes) -> None:
    await asyncio.sleep(delay)
    await shared.publish_raw([(topic, payload)])


def _log_error(gate: str, body: bytes) -> None:
    """An error the gate reports, said as the scalar actor says it: its code and its reason, at
    INFO for one that fails its run (the orchestrator tells that to the user), else WARNING."""
    try:
        report = ErrorReport.model_validate_json(body)
    except ValidationError:
        log.warning("tensor gate %s: %s", gate, body.decode(errors="replace"))
        return
    level = logging.INFO if report.code in RUN_FAILING_CODES else logging.WARNING
    log.log(level, "tensor gate %s: %s: %s", gate, report.code, report.message)
