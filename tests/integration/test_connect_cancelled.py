"""A broker connection cancelled while it is being made leaves nothing behind.

aiomqtt (issue #377, open in 2.5) leaves a half-made connection's reader, its "misc" task and
paho's socket to outlive the event loop: a `gatemesh run` on a deployment with a lost host
(whose record watch is cancelled as it connects) ended in "Event loop is closed" tracebacks
and "Task was destroyed but it is pending!" in eight runs of ten. gates/transport.Client
abandons such a connection cleanly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import clean_env

pytestmark = pytest.mark.integration

ATTEMPTS = 40
SCRIPT = """
import asyncio, sys
from gates.transport import BrokerAddress, client

async def attempt(broker, after):
    async def connect():
        async with client(broker):
            await asyncio.sleep(10)

    async with asyncio.TaskGroup() as group:
        connecting = group.create_task(connect())
        await asyncio.sleep(after)
        connecting.cancel()

broker = BrokerAddress.parse(sys.argv[1])
for i in range(int(sys.argv[2])):
    asyncio.run(attempt(broker, (i % 8) * 0.0005))  # cancelled in the thread's connect, or waiting for CONNACK
print("done")
"""


def test_connections_cancelled_while_connecting_leave_no_errors_after_the_loop(mosquitto_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mosquitto_url, str(ATTEMPTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert done.stderr == ""
