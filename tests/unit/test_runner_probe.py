"""A run whose connection breaks while its timed-out gates are probed fails as a lost connection
(retried like one), never as a transport-level error the CLI cannot name. The broker is replaced
by a session that accepts every publish and answers nothing (the runner's logic only)."""

from __future__ import annotations

import asyncio

import pytest

from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.errors import ConnectionLost
from orchestrator.runner import Runner


class SilentSession:
    """Takes every publish at once and never hears back: every run times out."""

    timeout = 1.0

    def publish(self, name: str, payload: bytes, retain: bool, confirm: bool = False) -> None:
        return None


def test_a_connection_lost_during_the_probe_is_a_lost_connection() -> None:
    async def run_and_lose_the_broker() -> None:
        runner = Runner(compile_source("x+y"), "d1", BrokerAddress.parse("mqtt://127.0.0.1:1"))
        runner._session = SilentSession()  # type: ignore[assignment]
        runner.connected.set()
        runner.probe_window = 0.3

        async def lose_the_broker() -> None:
            await asyncio.sleep(0.15)  # the run's 0.1 s timeout has struck: its gates are being probed
            runner._down(None, None)

        async with asyncio.TaskGroup() as group:
            group.create_task(lose_the_broker())
            await runner.run({"x": 1, "y": 2}, timeout=0.1, retries=1)

    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(run_and_lose_the_broker())
    (lost,) = caught.value.exceptions
    assert isinstance(lost, ConnectionLost), repr(lost)
