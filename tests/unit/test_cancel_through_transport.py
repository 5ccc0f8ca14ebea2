"""A cancelled task stays cancelled through the transport boundary.

aiomqtt's `Client.__aexit__` waits for the broker to answer DISCONNECT and turns a timeout into
an MqttError; `map_exceptions` made that a ConnectionLost, which a reconnecting loop (a room's
cluster watch) caught, and the cancellation was lost: the room never finished closing.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from gates.errors import ConnectionLost
from gates.transport import map_exceptions


async def _disconnect_unanswered_while_cancelled() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        with map_exceptions():
            raise aiomqtt.MqttError("Operation timed out") from None  # what __aexit__ raises then


async def test_an_error_raised_while_the_task_is_cancelled_is_the_cancellation() -> None:
    with pytest.raises(TimeoutError):  # the timeout's cancellation, not a ConnectionLost
        async with asyncio.timeout(0.05):
            await _disconnect_unanswered_while_cancelled()


async def test_an_error_of_a_task_not_cancelled_is_the_transports() -> None:
    with pytest.raises(ConnectionLost, match="the broker: Operation timed out"), map_exceptions():
        raise aiomqtt.MqttError("Operation timed out")
