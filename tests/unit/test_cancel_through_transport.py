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
from gates.transport import BrokerAddress, client, incoming, map_exceptions


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


async def test_a_cancellation_wait_for_swallowed_stops_a_reading_loop() -> None:
    """On Python 3.11, `asyncio.wait_for` (aiomqtt's, awaiting CONNACK) returns its result when the
    cancellation comes as the result does: the task, still cancelling, must not go on to read."""
    connack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    mqtt = client(BrokerAddress(host="127.0.0.1", port=1))  # never connected: nothing to read

    async def watch() -> None:
        await asyncio.wait_for(connack, 10)
        async for _ in incoming(mqtt):
            pass

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:  # without the check: read for good
        task = group.create_task(watch())
        await asyncio.sleep(0)
        connack.set_result(None)
        task.cancel()
    assert task.cancelled()
