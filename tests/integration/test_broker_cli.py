"""`python -m broker mosquitto`: it says so when it cannot serve, and it ends when its Mosquitto does.

A machine with Debian's package has a system Mosquitto on 1883: a second one there cannot
listen, and the wrapper must not print a URL that leads to the other broker (without the ACL
that --secure asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from broker.launch import free_port
from gates.transport import BrokerAddress, client, read_retained
from tests.processes import clean_env

pytestmark = pytest.mark.integration
BROKER = [sys.executable, "-m", "broker", "mosquitto"]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # after the name: state, then the parent's pid
                found.append(int(stat.parent.name))
    return found


def test_a_port_something_listens_on_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*BROKER, "--port", str(port)], capture_output=True, text=True, timeout=30, env=clean_env(), check=False
        )
    assert done.returncode == 1
    assert done.stdout == ""  # no URL
    assert done.stderr == f"error: 127.0.0.1:{port} is taken: something listens there already (a system Mosquitto?)\n"


def test_the_wrapper_ends_when_its_mosquitto_does() -> None:
    port = free_port()
    wrapper = subprocess.Popen(
        [*BROKER, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline() == f"mqtt://127.0.0.1:{port}\n"
        (child,) = children(wrapper.pid)
        os.kill(child, signal.SIGKILL)
        assert wrapper.wait(timeout=10) == 1
        assert wrapper.stderr is not None
        assert wrapper.stderr.read() == (
            "note: without --data-dir the hosts' and deployments' retained state is lost when this broker stops\n"
            f"error: mosquitto exited with status {-signal.SIGKILL}\n"
        )
    finally:
        wrapper.kill()
        wrapper.wait()


def test_a_broker_restarted_on_its_data_dir_keeps_what_was_retained(tmp_path: Path) -> None:
    """The README's broker lost every deployment when restarted: its state was kept in a
    temporary directory, deleted as it stopped. A directory Mosquitto cannot reach (pytest's
    tmp_path, under a 0700 parent, as root) is refused: it would silently save nothing."""
    if os.geteuid() == 0:
        refused = subprocess.run(
            [*BROKER, "--data-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=30, check=False
        )
        assert refused.returncode == 1
        assert "Mosquitto runs as its own user, which cannot enter" in refused.stderr, refused.stderr
        assert refused.stdout == ""
    top = Path(tempfile.mkdtemp(prefix="gatemesh-state-"))  # 0700 itself, but its parent, /tmp, is open
    top.chmod(0o755)
    port, data = free_port(), top / "state"
    url = f"mqtt://127.0.0.1:{port}"
    topic = "gatemesh-sys/test/kept"

    def started() -> subprocess.Popen[str]:
        wrapper = subprocess.Popen(
            [*BROKER, "--port", str(port), "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline() == f"{url}\n"
        return wrapper

    try:
        first = started()
        try:
            asyncio.run(publish_all_retained(url, topic))
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=10) == 0
        again = started()
        try:
            found = asyncio.run(read_retained(BrokerAddress.parse(url), [topic]))
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(timeout=10)
    finally:
        shutil.rmtree(top)
    assert found == {topic: b"still here"}


async def publish_all_retained(url: str, topic: str) -> None:
    async with client(BrokerAddress.parse(url)) as mqtt:
        await mqtt.publish(topic, b"still here", qos=1, retain=True)
