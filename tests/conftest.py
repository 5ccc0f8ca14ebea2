"""Real brokers for the tests: a Mosquitto process and the embedded amqtt broker in its own process.

Both start once per session on free loopback ports; every test deploys under a fresh
deployment id, which is its own topic prefix, so tests never hear each other.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from broker.launch import free_port, mosquitto, wait_until_listening
from tests.timeouts import StackDumpingTimeout


def pytest_configure(config: pytest.Config) -> None:
    """A test past its timeout (pyproject.toml) fails with every thread's and asyncio task's stack."""
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(StackDumpingTimeout(), "stack-dumping-timeout")


@pytest.fixture(scope="session")
def mosquitto_url() -> Iterator[str]:
    with mosquitto() as url:
        yield url


@pytest.fixture(scope="session")
def amqtt_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "embedded", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not wait_until_listening(process, "127.0.0.1", port, timeout=20):
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"embedded broker did not start: {stderr.decode(errors='replace')}")
    yield f"mqtt://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each integration test that takes this runs once against each real broker."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
